"""Options objects of the correlation, the backend contract, frozen results and the new input checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import ndimage

from tomo4d import Volume
from tomo4d.dvc import CorrelationOptions, NodeStatus, PsfCompensation, correlate, correlate_pyramid
from tomo4d.errors import InputError


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(3)
    a = (ndimage.gaussian_filter(rng.normal(size=(32, 32, 32)), 1.2) * 1000 + 5000).astype(np.float32)
    return a, ndimage.shift(a, (0.4, -0.2, 0.1), order=3, mode="mirror").astype(np.float32)


# -- options objects ---------------------------------------------------------------------------------

def test_options_object_equals_shortcuts(small):
    a = correlate(*small, node_spacing=8, half_window=6, options=CorrelationOptions(order=1, max_iterations=20))
    b = correlate(*small, node_spacing=8, half_window=6, order=1, max_iterations=20)
    np.testing.assert_array_equal(a.phi, b.phi)
    np.testing.assert_array_equal(a.status, b.status)


@pytest.mark.parametrize("kw, pattern", [
    ({"order": 2}, r"order=2: use 1 \(linear\) or 3 \(cubic\)"),
    ({"order": True}, r"order=True"),
    ({"max_iterations": 0}, r"max_iterations=0 is out of range"),
    ({"tolerance_px": 0}, r"tolerance_px=0 is out of range; give a number > 0"),
    ({"mask_fraction": 1.5}, r"mask_fraction=1.5 is out of range"),
    ({"out_of_view_fraction": -0.1}, r"out_of_view_fraction=-0.1 is out of range"),
    ({"replace": "yes"}, r"replace='yes' is not True or False"),
    ({"curvature_correction": 1}, r"curvature_correction=1 is not True or False"),
    ({"smooth_sigma_px": float("inf")}, r"smooth_sigma_px=inf is not finite"),
    ({"max_displacement_px": 0}, r"max_displacement_px=0 is out of range"),
    ({"threads": 0}, r"threads=0 is out of range"),
    ({"threads": 2.5}, r"threads=2.5 is not an integer"),
    ({"grey_model": "ncc"}, r"grey_model='ncc': use one of \('ssd', 'zssd', 'nssd', 'znssd'\)"),
    ({"backend": "gpu"}, r"backend='gpu': use 'auto', 'numba' or 'torch'"),
    ({"backend": "numba", "device": "cpu"}, r"device='cpu' needs backend='torch'"),
])
def test_options_are_checked_when_built(kw, pattern):
    with pytest.raises(InputError, match=pattern):
        CorrelationOptions(**kw)


def test_options_are_frozen_and_normalised():
    o = CorrelationOptions(tolerance_px=np.float64(0.01), max_iterations=np.int64(7))
    assert type(o.tolerance_px) is float and type(o.max_iterations) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.order = 1
    with pytest.raises(InputError, match="max_iterations=0"):
        dataclasses.replace(o, max_iterations=0)


@pytest.mark.parametrize("kw, pattern", [
    ({"psf_sigma_px": (1, 2)}, r"psf_sigma_px=\(1, 2\) must be one sigma or \(z, y, x\)"),
    ({"psf_sigma_px": "2"}, r"psf_sigma_px='2' must be one sigma"),
    ({"psf_sigma_px": -1}, r"psf_sigma_px=-1 must be"),
    ({"psf_sigma_px": 1, "passes": 0}, r"psf_passes=0 is out of range"),
    ({"psf_sigma_px": 1, "tolerance_px2": 0}, r"psf_tolerance_px2=0 is out of range"),
])
def test_psf_compensation_is_checked_when_built(kw, pattern):
    with pytest.raises(InputError, match=pattern):
        PsfCompensation(**kw)
    assert PsfCompensation(2.5).psf_sigma_px == (2.5, 2.5, 2.5)


@pytest.mark.parametrize("kw, pattern", [
    ({"options": CorrelationOptions(order=1), "order": 3}, r"order is given both as a keyword \(order=3\) and in "
                                                           r"options \(order=1\); give it in one place only"),
    ({"options": CorrelationOptions(), "max_iterations": 9}, r"max_iterations is given both"),
    ({"psf": PsfCompensation(1.0), "psf_sigma_px": 1.0}, r"psf_sigma_px is given both as a keyword and through psf"),
    ({"psf_passes": 2}, r"psf_passes given without psf_sigma_px"),
    ({"psf_sigma_px": None, "psf_tolerance_px2": 0.2}, r"psf_tolerance_px2 given without psf_sigma_px"),
    ({"max_iteration": 9}, r"'max_iteration' is not an option of the correlation; did you mean 'max_iterations'"),
    ({"options": {"order": 1}}, r"options=\{'order': 1\} is not a CorrelationOptions"),
    ({"psf": 2.8}, r"psf=2.8 is not a PsfCompensation"),
])
def test_shortcuts_and_objects_do_not_conflict(small, kw, pattern):
    with pytest.raises(InputError, match=pattern):
        correlate(*small, node_spacing=8, half_window=6, **kw)
    with pytest.raises(InputError, match=pattern):
        correlate_pyramid(*small, pyramid=(12, 8), **kw)


def test_same_value_as_keyword_and_in_options_is_accepted(small):
    f = correlate(*small, node_spacing=8, half_window=6, options=CorrelationOptions(order=1), order=1)
    assert f.converged.any()


# -- frozen results ----------------------------------------------------------------------------------

def test_field_notes_are_read_only_and_pyramid_builds_new_notes(small, tmp_path):
    import pickle

    from tomo4d.dvc import DisplacementField

    field = correlate_pyramid(*small, pyramid=(12, 8), half_windows=(6, 6))
    assert [lv["node_spacing_px"] for lv in field.notes["levels"]] == [12, 8]
    with pytest.raises(TypeError, match="read-only"):
        field.notes["levels"] = []
    with pytest.raises(TypeError, match="read-only"):
        field.notes.update(x=1)
    copy = pickle.loads(pickle.dumps(field))
    assert copy.notes == field.notes and copy.with_(notes={**copy.notes, "x": 1}).notes["x"] == 1
    back = DisplacementField.load(field.save(tmp_path / "f.h5"))
    assert back.notes["levels"] == field.notes["levels"]


def test_frozen_results_arrays_cannot_be_written_nor_changed_by_the_callers_arrays():
    from tomo4d.dvc import DisplacementField, ResidualMap, strain_field

    pos = np.array([[z, y, x] for z in (4.0, 12.0) for y in (4.0, 12.0) for x in (4.0, 12.0)])
    phi = np.tile(np.eye(4), (8, 1, 1))
    phi[:, 0, 3] = 0.1 * pos[:, 0]  # u_z = 0.1 z: e_zz 0.1
    status = np.zeros(8, np.int8)
    field = DisplacementField(pos, phi, status, grid_shape=(2, 2, 2), node_spacing_px=(8, 8, 8))
    strain = strain_field(field)
    arrays = {"positions": field.positions_zyx_px, "phi": field.phi, "status": field.status,
              "iterations": field.iterations, "residual": field.residual, "F": strain.F, "hencky": strain.hencky,
              "valid": strain.valid, "volumetric": strain.volumetric, "stretches": strain.stretches}
    for name, a in arrays.items():
        with pytest.raises(ValueError, match="read-only"):
            a.reshape(-1)[0] = 7
        assert not a.flags.writeable, name
    # the caller's own arrays stay theirs: writing them does not change the field
    pos[0, 0], phi[0, 0, 3], status[0] = 99.0, 5.0, 3
    assert field.positions_zyx_px[0, 0] == 4.0 and field.phi[0, 0, 3] == pytest.approx(0.4)
    assert field.status[0] == 0 and status.flags.writeable and phi.flags.writeable
    assert np.allclose(strain.component("hencky_zz")[strain.valid], np.log(1.1))
    # a field derived from another shares its (read-only) arrays instead of copying them
    assert field.with_(notes={"x": 1}).phi is field.phi
    res = ResidualMap(np.zeros((4, 4, 4), np.float32), 0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="read-only"):
        res.residual[0, 0, 0] = 1.0


# -- the backend contract ----------------------------------------------------------------------------

def _problem(small, **opts):
    from tomo4d.dvc._backend import NodeProblem
    from tomo4d.dvc.field import node_grid

    ref, dfm = small
    pos, _ = node_grid(ref.shape, node_spacing=8, half_window=6)
    return NodeProblem.build(ref, dfm, np.ones(ref.shape, bool), pos, (6, 6, 6), CorrelationOptions(**opts))


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_backends_solve_a_node_problem_into_a_node_state(small, backend):
    from tomo4d.dvc._backend import NodeState, select_backend

    if backend == "torch":
        pytest.importorskip("torch")
    problem = _problem(small, backend=backend, device="cpu" if backend == "torch" else None)
    state = NodeState.start(np.tile(np.eye(4), (problem.n_nodes, 1, 1)))
    sel = np.zeros(problem.n_nodes, bool)
    sel[::2] = True
    select_backend(problem.options).solve(problem, state, sel)
    assert (state.status[sel] == NodeStatus.CONVERGED).all()
    assert (state.status[~sel] == NodeStatus.NOT_CONVERGED).all() and (state.iterations[~sel] == 0).all()
    np.testing.assert_allclose(state.phis[sel, :3, 3], np.tile([0.4, -0.2, 0.1], (sel.sum(), 1)), atol=0.02)
    assert np.all(state.out_of_view[sel] == 0)


def test_numba_call_leaves_thread_settings_as_they_were(small):
    """A correlation with ``threads=1`` restores numba's thread count, and the OpenMP thread count that
    numba's pool sets (torch reads it: it ran on numba's threads afterwards)."""
    code = """
import ctypes, numba, numpy as np
from tomo4d.dvc import correlate
omp = ctypes.CDLL("libgomp.so.1")
a = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
omp_before = omp.omp_get_max_threads()      # no numba call before: its first one starts its pool
correlate(a, a, node_spacing=8, half_window=6, threads=1, backend="numba")
after = (omp.omp_get_max_threads(), numba.get_num_threads())
assert after == (omp_before, numba.config.NUMBA_NUM_THREADS), (omp_before, after)
"""
    env = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    import os

    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    try:
        import ctypes

        ctypes.CDLL("libgomp.so.1")
    except OSError:
        pytest.skip("no GNU OpenMP runtime")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_torch_backend_does_not_import_numba():
    code = "import sys, tomo4d.dvc._torch_backend, tomo4d.dvc._backend; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    # nor does a whole correlation on it (the post-processing and the field included)
    run = ("import sys, numpy as np; from scipy import ndimage; from tomo4d.dvc import correlate\n"
           "a = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(24, 24, 24)), 1.2).astype(np.float32)\n"
           "b = ndimage.shift(a, (0.3, 0, 0), order=3, mode='mirror').astype(np.float32)\n"
           "f = correlate(a, b, node_spacing=8, half_window=5, backend='torch', device='cpu')\n"
           "assert f.converged.any() and 'numba' not in sys.modules, sorted(m for m in sys.modules if 'numba' in m)")
    subprocess.run([sys.executable, "-c", run], check=True)


def test_kernel_status_codes_come_from_node_status():
    from tomo4d.dvc import _kernels

    assert (_kernels.K_CONVERGED, _kernels.K_NOT_CONVERGED, _kernels.K_DIVERGED, _kernels.K_SINGULAR,
            _kernels.K_OUT_OF_VIEW) == (NodeStatus.CONVERGED, NodeStatus.NOT_CONVERGED, NodeStatus.DIVERGED,
                                        NodeStatus.LOW_TEXTURE, NodeStatus.OUT_OF_VIEW)


# -- bad input ---------------------------------------------------------------------------------------

def test_volumes_of_different_voxel_sizes_are_refused(small):
    ref, dfm = small
    with pytest.raises(InputError, match=r"reference has voxel size \(50, 50, 50\) nm but deformed has "
                                         r"\(100, 100, 100\) nm"):
        correlate(Volume(ref, 50.0), Volume(dfm, 100.0), node_spacing=8, half_window=6)
    # unknown voxel sizes and plain arrays are not compared
    assert correlate(Volume(ref, 50.0), Volume(dfm, None), node_spacing=8, half_window=6).voxel_size_nm == (50,) * 3
    assert correlate(Volume(ref, 50.0), dfm, node_spacing=8, half_window=6).converged.any()


def test_mask_selecting_no_node_says_how_many_and_the_fraction(small):
    mask = np.zeros(small[0].shape, bool)
    mask[:, :, :4] = True
    with pytest.raises(InputError, match=r"no node can be correlated: the mask selects none of the 27 nodes \(each "
                                         r"needs mask_fraction=0.5 of its window inside the mask; the mask covers "
                                         r"12.5 % of the volume and at most 23.1 % of a window\)"):
        correlate(*small, node_spacing=8, half_window=6, mask=mask)


def test_node_spacing_larger_than_the_volume_is_refused(small):
    with pytest.raises(InputError, match=r"node_spacing=\(8, 8, 40\) is larger than the volume along x \(40 px > 32 "
                                         r"voxels"):
        correlate(*small, node_spacing=(8, 8, 40), half_window=6)


def test_a_node_spacing_whose_default_window_does_not_fit_names_node_spacing(small):
    # the half-window defaults to the spacing: the error names the parameter the caller gave, with a value that fits
    with pytest.raises(InputError, match=r"node_spacing=16 is too large for the volume along z \(32 voxels, shape "
                                         r"\(32, 32, 32\)\): the half-window defaults to the node spacing, so each "
                                         r"window would span 33 voxels; give a node spacing in px \(voxels\), at most 15"):
        correlate(*small, node_spacing=16)
    assert correlate(*small, node_spacing=15).n_nodes == 1


@pytest.mark.parametrize("pyramid, pattern", [
    ((8, 12), r"pyramid=\(8, 12\) is not decreasing: level 1 \(node spacing 12\) is not finer than level 0 \(8\); "
              r"give node spacings coarse to fine, e.g. \(12, 8\)"),
    ((12, 12), r"pyramid=\(12, 12\) is not decreasing"),
])
def test_pyramid_must_go_coarse_to_fine(small, pyramid, pattern):
    with pytest.raises(InputError, match=pattern):
        correlate_pyramid(*small, pyramid=pyramid, half_windows=(6, 6))


def test_initial_field_of_another_grid_is_refused(small):
    ref, dfm = small
    other = correlate(ref[:24], dfm[:24], node_spacing=8, half_window=6)
    with pytest.raises(InputError, match=r"initial was measured on volumes of shape \(24, 32, 32\) but reference has "
                                         r"shape \(32, 32, 32\)"):
        correlate(ref, dfm, node_spacing=8, half_window=6, initial=other)
    far = other.with_(positions_zyx_px=other.positions_zyx_px + 40, notes={})
    with pytest.raises(InputError, match=r"initial has nodes at z, y, x \[47, 47, 47\] .. \[55, 63, 63\] px, outside "
                                         r"the reference of shape \(32, 32, 32\)"):
        correlate(ref, dfm, node_spacing=8, half_window=6, initial=far)
    with pytest.raises(InputError, match=r"initial=3 is not a DisplacementField"):
        correlate(ref, dfm, node_spacing=8, half_window=6, initial=3)


def test_a_field_where_most_nodes_failed_is_returned_unreplaced_with_a_warning(texture):
    """Garbage over most of the deformed volume: 62 % of the nodes fail; they keep their statuses (no
    interpolation from the few good ones) and a warning gives the fraction."""
    dfm = ndimage.shift(texture, (0.4, 0, 0), order=3, mode="mirror").astype(np.float32)
    noise = np.random.default_rng(5).normal(size=dfm[:, :, 12:].shape)
    dfm[:, :, 12:] = ndimage.gaussian_filter(noise, 1.2) * 1000 + 5000
    with pytest.warns(RuntimeWarning) as record:
        field = correlate(texture, dfm, node_spacing=10, half_window=6)
    failed = np.isin(field.status, [NodeStatus.NOT_CONVERGED, NodeStatus.DIVERGED]).sum()
    assert field.notes["failed_fraction"] > 0.5 and failed / field.notes["correlated_nodes"] > 0.5
    assert not (field.status == NodeStatus.INTERPOLATED).any() and field.notes["n_replaced"] == 0
    assert "replace_skipped" in field.notes
    msg = [str(r.message) for r in record]
    assert any(f"{100 * field.notes['failed_fraction']:.0f} % of the 125 correlated nodes did not converge or "
               "diverged" in m for m in msg), msg


def test_a_good_field_records_a_small_failed_fraction(small):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        field = correlate(*small, node_spacing=8, half_window=6)
    assert field.notes["failed_fraction"] < 0.1
