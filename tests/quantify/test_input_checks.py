"""Labels that cannot be what a quantify function expects are refused, never counted as something else."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d.cli import main
from tomo4d.errors import InputError


def _mask255():
    """A {0, 255} mask of two separate blobs (what a thresholding tool writes)."""
    a = np.zeros((16, 16, 16), np.uint8)
    a[2:6, 2:6, 2:6] = 255
    a[9:14, 9:14, 9:14] = 255
    return a


def _grey():
    return np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)


def _phase_calls():
    from tomo4d.quantify import (
        axial_profile,
        electrode_thickness,
        phase_series,
        phase_volumes,
    )

    return [lambda a: phase_volumes(a, voxel_size_nm=50), lambda a: electrode_thickness(a, voxel_size_nm=50),
            lambda a: axial_profile(a, voxel_size_nm=50), lambda a: phase_series([a], voxel_size_nm=50)]


def _particle_calls():
    from tomo4d.quantify import (
        detect_cracks,
        lithiation_modes,
        particle_properties,
        track_particles,
    )
    from tomo4d.quantify.modes import particle_depth

    return [lambda a: particle_properties(a, voxel_size_nm=50), lambda a: detect_cracks(a, voxel_size_nm=50),
            lambda a: track_particles([a, a], voxel_size_nm=50), lambda a: particle_depth(a, voxel_size_nm=50),
            lambda a: lithiation_modes(a, [np.zeros(a.shape, bool)], voxel_size_nm=50)]


@pytest.mark.parametrize("call", range(4))
def test_phase_functions_refuse_a_0_255_mask_naming_found_and_expected_values(call):
    with pytest.raises(InputError, match=r"holds values \{0, 255\}; \w+ expects phase labels: 0 pore, 1 matrix, "
                                         r"2 silicon.*values \{255\} \(\S+ % of the voxels\) are none of these"):
        _phase_calls()[call](_mask255())


@pytest.mark.parametrize("call", range(4))
def test_phase_functions_refuse_a_grey_image(call):
    with pytest.raises(InputError, match=r"non-integer values.*grey-value image"):
        _phase_calls()[call](_grey())


@pytest.mark.parametrize("call", range(5))
def test_particle_functions_refuse_a_binary_mask_of_several_objects(call):
    with pytest.raises(InputError, match=r"binary mask of 2 separate objects, not particle labels"):
        _particle_calls()[call](_mask255())


@pytest.mark.parametrize("call", range(5))
def test_particle_functions_refuse_grey_images_and_negative_labels(call):
    with pytest.raises(InputError, match=r"grey-value image"):
        _particle_calls()[call](_grey())
    with pytest.raises(InputError, match=r"negative values \{-3\}"):
        _particle_calls()[call](np.full((16, 16, 16), -3, np.int16))


def test_a_0_255_mask_is_counted_once_its_codes_are_named():
    from tomo4d.quantify import PhaseCodes, phase_volumes

    with pytest.raises(InputError, match=r"pass phases=PhaseCodes\(...\) naming the codes"):
        phase_volumes(_mask255(), voxel_size_nm=50)
    pv = phase_volumes(_mask255(), voxel_size_nm=50, phases=PhaseCodes(silicon=(255,)))
    assert abs(pv.fraction.sum() - 1) < 1e-12 and pv.of("silicon") > 0


def _strain():
    from tomo4d.dvc import DisplacementField, strain_field

    ax = np.arange(4, 28, 4)
    pos = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3).astype(float)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 3] = 0.01 * pos[:, 0]
    f = DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=(len(ax),) * 3, node_spacing_px=(4,) * 3)
    return strain_field(f)


@pytest.mark.parametrize("kw, pattern", [
    ({"collector_z_px": np.float64("nan"), "separator_z_px": 20.0}, r"collector_z_px=nan is not finite"),
    ({"collector_z_px": 4.0, "separator_z_px": float("nan")}, r"separator_z_px=nan is not finite"),
    ({"collector_z_px": np.float64(20.0), "separator_z_px": np.float64(4.0)},
     r"separator_z_px=4 must be above collector_z_px=20"),
    ({"collector_z_px": 4.0, "separator_z_px": 20.0, "bins": 0}, r"bins=0 is out of range"),
])
def test_regional_strain_refuses_a_nan_or_inverted_split(kw, pattern):
    from tomo4d.quantify import regional_strain_series

    with pytest.raises(InputError, match=pattern) as err:
        regional_strain_series([_strain()], **kw)
    assert "np.float64" not in str(err.value)


@pytest.mark.parametrize("command, pattern", [
    ("phases", r"labels holds values \{0, 255\}; phase_volumes expects phase labels"),
    ("thickness", r"labels holds values \{0, 255\}; electrode_thickness expects phase labels"),
    ("particles", r"binary mask of 2 separate objects"),
])
def test_cli_refuses_a_0_255_mask(tmp_path, capsys, command, pattern):
    import re

    import tifffile

    p = tmp_path / "mask.tif"
    tifffile.imwrite(p, _mask255())
    assert main(["quantify", command, str(p), "--voxel-size", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err
