"""User mistakes in make_experiment / SyntheticExperiment.load / ``tomo4d phantom``: InputError naming the
parameter, the value and the fix (memory estimated before allocating)."""

import json
from collections import namedtuple

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.errors import FormatError, InputError
from tomo4d.phantom import SyntheticExperiment, make_experiment


def test_a_huge_shape_is_refused_with_the_memory_estimate():
    with pytest.raises(InputError, match=r"shape=\(4096, 4096, 4096\) needs about .* TiB of memory .* only .* "
                                         r"available; give a smaller shape \(--shape\)"):
        make_experiment(shape=(4096,) * 3)


def test_memory_is_compared_with_what_is_available(monkeypatch):
    import psutil

    from tomo4d.phantom.experiment import estimate_memory_bytes

    mem = namedtuple("mem", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: mem(300 * 2**20, 300 * 2**20))
    need = estimate_memory_bytes((128, 128, 128))
    assert need > 300 * 2**20
    with pytest.raises(InputError, match=r"shape=\(128, 128, 128\) needs about .* GiB .* only 0.293 GiB is "
                                         r"available; give a smaller shape \(--shape\), e.g. at most \d+ per axis"):
        make_experiment(shape=128, n_steps=1)


@pytest.mark.parametrize("kw, match", [
    (dict(shape=(32.5, 32, 32)), r"shape\[0\]=32.5 is not an integer"),
    (dict(shape=("32", 32, 32)), r"shape\[0\]='32' is not an integer"),
    (dict(shape=(32, "abc", 32)), r"shape\[1\]='abc' is not an integer"),
    (dict(shape=(32, 32, -32)), r"shape\[2\]=-32 is out of range; give a whole number >= 24"),
    (dict(shape=(True, 32, 32)), r"shape\[0\]=True is not an integer"),
    (dict(shape=(32, 32, float("nan"))), r"shape\[2\]=nan is not an integer"),
    (dict(shape=(32, 32)), r"shape=\(32, 32\) has 2 value\(s\)"),
    (dict(shape=32, n_steps=1.5), r"n_steps=1.5 is not an integer"),
    (dict(shape=32, n_steps=True), r"n_steps=True is not an integer"),
    (dict(shape=32, n_steps="3"), r"n_steps='3' is not an integer"),
    (dict(shape=32, seed=True), r"seed=True is not an integer"),
    (dict(shape=32, seed=1.5), r"seed=1.5 is not an integer"),
    (dict(shape=32, neutron_bin=2.5), r"neutron_bin=2.5 is not an integer"),
    (dict(shape=32, neutron_bin=True), r"neutron_bin=True is not an integer"),
    (dict(shape=32, hq_noise=True), r"hq_noise=True is not a number"),
    (dict(shape=32, hq_noise="0.1"), r"hq_noise='0.1' is not a number"),
    (dict(shape=32, expansion=np.float64(2.0)), r"expansion=2 is out of range"),
    (dict(shape=32, lq_voxel_nm=np.float64(20.0)), r"lq_voxel_nm=20 must be >= hq_voxel_nm=50"),
    (dict(shape=32, soc_schedule=0.5), r"soc_schedule=0.5 is not a sequence"),
    (dict(shape=32, n_steps=2, soc_schedule=(0, "x")), r"soc_schedule\[1\]='x' is not a number"),
])
def test_bad_parameters_name_the_parameter_without_numpy_reprs(kw, match):
    with pytest.raises(InputError, match=match) as info:
        make_experiment(**kw)
    assert "np.float" not in str(info.value) and "np.int" not in str(info.value)


@pytest.mark.parametrize("content, match", [
    ("{not json", "is not valid JSON"),
    (b"\xff\xfe\x00", "is not valid JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('{"tomo4d_phantom": 1}', "lacks or garbles its params/files"),
    ('{"tomo4d_phantom": 1, "params": {"colour": 1}, "files": {}}', r"unknown: \['colour'\]"),
    ('{"tomo4d_phantom": 1, "params": {"shape": [8, 8, 8]}, "files": {}}', r"shape\[0\]=8 is out of range"),
])
def test_damaged_experiment_files_name_the_file(tmp_path, content, match):
    p = tmp_path / "experiment.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(FormatError, match=match) as info:
        SyntheticExperiment.load(tmp_path)
    assert str(p) in str(info.value) and "tomo4d phantom" in str(info.value)


def test_cli_phantom_with_a_huge_shape_exits_2_with_the_estimate(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "x"), "--shape", "4096"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs about" in err[0] and "--shape" in err[0], err
    assert not (tmp_path / "x").exists()


def test_the_estimate_grows_with_the_voxel_count():
    from tomo4d.phantom.experiment import estimate_memory_bytes

    assert estimate_memory_bytes((64, 64, 64)) < estimate_memory_bytes((128, 64, 64))
    assert json.dumps(estimate_memory_bytes((24, 24, 24)))   # a plain int


@pytest.mark.parametrize("kw, match", [
    (dict(li6_fraction=np.float64(1.5)), r"li6_fraction=1.5 is out of range"),
    (dict(li6_fraction="x"), r"li6_fraction='x' is not a number"),
    (dict(li6_fraction=0.5, wavelength_a=float("nan")), r"wavelength_a=nan is not finite"),
    (dict(li6_fraction=0.5, wavelength_a=np.float64(-1.0)), r"wavelength_a=-1 is out of range"),
])
def test_phantom_neutron_cross_sections_refuse_bad_numbers(kw, match):
    from tomo4d.phantom.neutron import li_cross_section_b

    with pytest.raises(InputError, match=match) as info:
        li_cross_section_b(**kw)
    assert "np.float" not in str(info.value)


@pytest.mark.parametrize("kw, match", [
    (dict(path_length_mm=np.float64(-1.0)), r"path_length_mm=-1 is out of range"),
    (dict(path_length_mm=float("nan")), r"path_length_mm=nan is not finite"),
    (dict(wavelengths_a=[1.0, float("nan")]), r"wavelengths_a must be a 1D array of positive"),
    (dict(wavelengths_a=["a", "b"]), r"wavelengths_a=\['a', 'b'\] is not numeric"),
])
def test_phantom_transmission_spectra_refuse_bad_numbers(kw, match):
    from tomo4d.phantom.neutron import transmission_spectra

    exp = make_experiment(shape=24, n_steps=1)
    with pytest.raises(InputError, match=match) as info:
        transmission_spectra(exp, 0, **kw)
    assert "np.float" not in str(info.value)
