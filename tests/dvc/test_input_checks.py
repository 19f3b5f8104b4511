"""DVC inputs are never silently replaced: bad options, NaN voxels and mismatched grids are refused."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.errors import InputError


@pytest.fixture(scope="module")
def small():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    a = ndimage.gaussian_filter(rng.normal(size=(32, 32, 32)), 1.2).astype(np.float32)
    return a, np.roll(a, 1, axis=0)


@pytest.mark.parametrize("kw, pattern", [
    ({"node_spacing": 0}, r"node_spacing=0 is out of range; give a whole number >= 1"),
    ({"node_spacing": "8"}, r"node_spacing='8' is not an integer"),
    ({"node_spacing": 8.7}, r"node_spacing=8.7 is not an integer"),
    ({"node_spacing": (8, 8.5, 8)}, r"node_spacing\[1\]=8.5 is not an integer"),
    ({"node_spacing": (8, 8)}, r"node_spacing=\(8, 8\) has 2 values"),
    ({"node_spacing": 8, "half_window": 0}, r"half_window=0 is out of range"),
    ({"node_spacing": 8, "half_window": 6.5}, r"half_window=6.5 is not an integer"),
    ({"node_spacing": 8, "search_radius_px": -3}, r"search_radius_px=-3 is out of range; give a whole number >= 0"),
    ({"node_spacing": 8, "search_radius_px": 2.5}, r"search_radius_px=2.5 is not an integer"),
    ({"node_spacing": 8, "max_iterations": 0}, r"max_iterations=0 is out of range"),
    ({"node_spacing": 8, "tolerance_px": np.float64(-1)}, r"tolerance_px=-1 is out of range"),
    ({"node_spacing": 8, "outlier_threshold": -1}, r"outlier_threshold=-1 is out of range"),
    ({"node_spacing": 8, "mask_fraction": 1.5}, r"mask_fraction=1.5 is out of range"),
    ({"node_spacing": 8, "smooth_sigma_px": float("nan")}, r"smooth_sigma_px=nan is not finite"),
    ({"node_spacing": 8, "psf_sigma_px": 1.0, "psf_passes": 0}, r"psf_passes=0 is out of range"),
])
def test_correlate_refuses_instead_of_replacing(small, kw, pattern):
    from tomo4d.dvc import correlate

    with pytest.raises(InputError, match=pattern) as err:
        correlate(*small, **kw)
    assert "np.float64" not in str(err.value)


@pytest.mark.parametrize("kw, pattern", [
    ({"pyramid": (16, 8.5)}, r"pyramid\[1\]=8.5 is not an integer"),
    ({"pyramid": ("16", 8)}, r"pyramid\[0\]='16' is not an integer"),
    ({"pyramid": (16, 0)}, r"pyramid\[1\]=0 is out of range"),
    ({"pyramid": ()}, r"pyramid is empty"),
    ({"pyramid": 8}, r"pyramid=8 must be a sequence"),
    ({"pyramid": (16, 8), "half_windows": (8, 0)}, r"half_windows\[1\]=0 is out of range"),
    ({"pyramid": (8, 16)}, (r"finest pyramid level \(node spacing 16, half-window 16\) needs windows of 33 voxels "
                            r"but the volume has shape \(32, 32, 32\)")),
    ({"pyramid": (16, 8), "search_radius_px": -3}, r"search_radius_px=-3 is out of range"),
])
def test_correlate_pyramid_refuses_bad_levels(small, kw, pattern):
    from tomo4d.dvc import correlate_pyramid

    with pytest.raises(InputError, match=pattern):
        correlate_pyramid(*small, **kw)


@pytest.mark.parametrize("which", ["reference", "deformed"])
def test_correlate_refuses_nan_voxels_with_a_count(small, which):
    from tomo4d.dvc import correlate

    ref, dfm = small[0].copy(), small[1].copy()
    (ref if which == "reference" else dfm)[5, 5, 5:8] = np.nan
    with pytest.raises(InputError, match=rf"{which} holds 3 non-finite \(NaN/Inf\) voxels"):
        correlate(ref, dfm, node_spacing=8)


def test_residual_map_refuses_volumes_of_another_grid(small):
    from tomo4d.dvc import correlate, residual_map

    ref, dfm = small
    field = correlate(ref[:24], dfm[:24], node_spacing=8, half_window=6)
    assert field.volume_shape_zyx == (24, 32, 32)
    with pytest.raises(InputError, match=r"measured on volumes of shape \(24, 32, 32\) but reference and deformed "
                                         r"have shape \(32, 32, 32\)"):
        residual_map(ref, dfm, field)
    assert residual_map(ref[:24], dfm[:24], field).residual.shape == (24, 32, 32)


def test_residual_map_refuses_a_field_beyond_the_volumes_when_its_grid_is_not_recorded(small):
    from tomo4d.dvc import DisplacementField, residual_map

    ref, dfm = small
    ax = np.arange(8, 56, 8)
    pos = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3).astype(float)
    f = DisplacementField(pos, np.tile(np.eye(4), (len(pos), 1, 1)), np.zeros(len(pos), np.int8),
                          grid_shape=(len(ax),) * 3, node_spacing_px=(8,) * 3, half_window_px=(8,) * 3)
    with pytest.raises(InputError, match=r"span z, y, x \[0, 0, 0\] .. \[56, 56, 56\] px, beyond reference and "
                                         r"deformed of shape \(32, 32, 32\)"):
        residual_map(ref, dfm, f)


@pytest.mark.parametrize("kw, pattern", [({"sigma_px": float("nan")}, r"sigma_px=nan is not finite"),
                                         ({"noise": -1.0}, r"noise=-1 is out of range"),
                                         ({"slab": 0}, r"slab=0 is out of range")])
def test_residual_map_refuses_bad_options(small, kw, pattern):
    from tomo4d.dvc import correlate, residual_map

    field = correlate(*small, node_spacing=8, half_window=6)
    with pytest.raises(InputError, match=pattern):
        residual_map(*small, field, **kw)


def test_volume_shape_survives_saving_and_composition(small, tmp_path):
    from tomo4d.dvc import DisplacementField, compose_fields, correlate

    field = correlate(*small, node_spacing=8, half_window=6)
    p = field.save(tmp_path / "f.h5")
    assert DisplacementField.load(p).volume_shape_zyx == (32, 32, 32)
    assert compose_fields(field, field).volume_shape_zyx == (32, 32, 32)


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error: "), err
    return err[0]


@pytest.mark.parametrize("args, pattern", [
    (["--node-spacing", "8", "--search", "-3"], "search_radius_px=-3 is out of range"),
    (["--pyramid", "16,8", "--search", "-3"], "search_radius_px=-3 is out of range"),
    (["--node-spacing", "8", "--half-window", "-2"], "half_window=-2 is out of range"),
])
def test_cli_dvc_refuses(small, tmp_path, capsys, args, pattern):
    import tifffile

    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(a, small[0])
    tifffile.imwrite(b, small[1])
    out = tmp_path / "f.h5"
    assert main(["dvc", str(a), str(b), "-o", str(out), *args]) == 2
    assert pattern in _err(capsys) and not out.exists()


def test_cli_residual_refuses_another_grid(small, tmp_path, capsys):
    import tifffile

    from tomo4d.dvc import correlate

    ref, dfm = small
    f = correlate(ref[:24], dfm[:24], node_spacing=8, half_window=6).save(tmp_path / "f.h5")
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(a, ref)
    tifffile.imwrite(b, dfm)
    out = tmp_path / "r.tif"
    assert main(["residual", str(a), str(b), str(f), "-o", str(out)]) == 2
    assert "measured on volumes of shape (24, 32, 32)" in _err(capsys) and not out.exists()
