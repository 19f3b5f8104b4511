"""Out-of-core registration (``register(..., chunk_budget_mb=...)``): streamed pyramid levels equal the in-memory
ones, sampled boxes that tile the volume equal the in-memory normal equations, sampled boxes agree with the
in-memory registration on the real snow volume, lazy Zarr inputs with a lazy mask, NaN refused as read."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from tomo4d.errors import InputError
from tomo4d.register import _global as g
from tomo4d.register import _outofcore as oc
from tomo4d.register import apply_phi, invert_phi, make_phi, register


def _deformed(fixed, phi):
    return apply_phi(fixed, invert_phi(phi), order=3)


def _corner_error(p, q, shape) -> float:
    """Largest displacement difference (px) of the volume's 8 corners under two Phis about the centre."""
    c = (np.asarray(shape, float) - 1) / 2
    cs = np.array([[z, y, x] for z in (0, shape[0] - 1) for y in (0, shape[1] - 1) for x in (0, shape[2] - 1)], float)

    def move(phi):
        return (cs - c) @ phi[:3, :3].T + c + phi[:3, 3]

    return float(np.abs(move(p) - move(q)).max())


TRUE = make_phi(translation_px=(1.3, -0.8, 1.6), rotation_deg=(0.0, 1.5, -1.0), strain=(0.008, -0.004, 0.005))


@pytest.fixture(scope="module")
def pair(texture):
    return texture, _deformed(texture, TRUE)


def test_streamed_binning_is_bit_identical(texture):
    lazy = da.from_array(texture, chunks=(7, 52, 56))   # chunks that do not divide the shape
    for b in (1, 2, 3, 4):
        got = oc.bin_streamed(lazy, b, 40_000, "fixed")   # a few slices per slab
        assert np.array_equal(got, g._bin(texture, b))
    mask = texture > 0.3
    assert np.array_equal(oc.bin_streamed(da.from_array(mask, chunks=(5, 52, 56)), 2, 40_000, "mask", mask=True),
                          g._bin(mask.astype(np.float32), 2) > 0.5)


def test_boxes_tiling_the_volume_give_the_in_memory_result(pair, monkeypatch):
    """Every level on sub-boxes that tile it: the summed normal equations are the in-memory ones (to rounding)."""
    fixed, moving = pair
    from tomo4d.register import _kernels

    ref = register(fixed, moving, threads=1)
    compiled = {n: len(getattr(_kernels, n).signatures) for n in ("warp_sums", "hessian_moments")}
    monkeypatch.setattr(oc, "level_fits", lambda shape, b, budget: False)
    got = oc.register_levels(da.from_array(fixed, chunks=16), da.from_array(moving, chunks=16), None, np.eye(4),
                             [4, 2, 1], budget=2**30, rigid=False, order=3, max_iterations=50, tolerance_px=1e-3,
                             margin_px=1, photometric=True, progress=None, pool=None, n_threads=1, box_px=20)
    routes = got.extra["out_of_core"]["levels"]
    assert [r["route"] for r in routes] == ["sampled"] * 3 and routes[-1]["boxes"] > 8
    assert _corner_error(got.phi, ref.phi, fixed.shape) < 1e-5
    assert got.iterations == ref.iterations
    # the boxes reuse the kernels' compiled signatures (no recompilation per call pattern)
    assert compiled == {n: len(getattr(_kernels, n).signatures) for n in compiled}


def test_a_budget_below_the_volume_streams_and_agrees(pair):
    fixed, moving = pair
    ref = register(fixed, moving, threads=1)
    lazy = [da.from_array(a, chunks=(10, 52, 56)) for a in pair]
    budget_mb = 1.5  # the volume's working set is 2.7 MB: bins 4 and 2 whole, bin 1 sampled
    got = register(*lazy, threads=1, chunk_budget_mb=budget_mb)
    routes = [r["route"] for r in got.extra["out_of_core"]["levels"]]
    assert routes == ["whole", "whole", "sampled"]
    assert _corner_error(got.phi, ref.phi, fixed.shape) < 0.05
    assert _corner_error(got.phi, TRUE, fixed.shape) < 0.05
    # the same inputs in memory with a budget above them: the in-memory route, unchanged
    same = register(fixed, moving, threads=1, chunk_budget_mb=100)
    assert np.array_equal(same.phi, ref.phi) and "out_of_core" not in same.extra


def _collector_pair():
    """A featureless slab (z < 44, a current collector: flat grey + noise) under a textured electrode; a known
    small rigid motion; the registration mask is the slab plus 4 textured slices (as the align stage's)."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    shape = (64, 96, 96)
    tex = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    img = np.where(np.arange(64)[:, None, None] < 44, 3.0, (tex - tex.mean()) / tex.std()).astype(np.float32)
    true = make_phi(translation_px=(0.4, -0.7, 0.9), rotation_deg=(0.3, -0.2, 0.5))
    noisy = [(a + rng.normal(0, 0.1, shape)).astype(np.float32) for a in (img, _deformed(img, true))]
    band = np.zeros(64, bool)
    band[:48] = True
    return noisy, np.broadcast_to(band[:, None, None], shape), true


@pytest.mark.parametrize("sampling", ["informative", "even"])
def test_sampled_boxes_go_where_the_fixed_image_fixes_the_motion(sampling):
    """The finest level keeps 3 boxes: chosen on the guide they hold the textured edge and the motion is found
    (0.03 px; in memory 0.02 px); spread evenly (the former layout) they sit in the flat slab and the level walks
    off by ~180 px (the 1024^3 align stage's 1.4 px / 16.5 px error at T1 / T2)."""
    (fixed, moving), mask, true = _collector_pair()
    got = oc.register_levels(*(da.from_array(a, chunks=16) for a in (fixed, moving, mask)), np.eye(4), [4, 2, 1],
                             budget=4 * 2**20, rigid=True, order=3, max_iterations=50, tolerance_px=1e-3,
                             margin_px=1, photometric=True, progress=None, pool=None, n_threads=1, sampling=sampling)
    levels = got.extra["out_of_core"]["levels"]
    assert levels[-1]["route"] == "sampled" and levels[-1]["boxes"] == 3
    err = _corner_error(got.phi, true, fixed.shape)
    assert err < 0.1 if sampling == "informative" else err > 1.0


def test_choose_takes_the_informative_boxes_without_overlap():
    from tomo4d.register import _sampling as s

    boxes = s.candidates(np.array([0, 0, 0]), np.array([10, 8, 8]), np.array([4, 8, 8]))
    assert [(int(lo[0]), int(hi[0])) for lo, hi in boxes] == [(0, 4), (4, 8), (8, 10), (6, 10)]
    info = np.stack([np.eye(6) * w for w in (1e-3, 1e-3, 1.0, 2.0)])  # the flush box holds the most
    assert s.choose(boxes, info, 2) == [3, 0]  # then only the box it does not overlap
    assert s.choose(boxes, info, 1) == [3]


def test_a_budget_too_small_for_the_coarsest_level_puts_coarser_ones_in_front():
    assert oc.schedule((1024, 1024, 1024), [4, 2, 1], 32 * 2**20) == [16, 8, 4, 2, 1]
    assert oc.schedule((64, 64, 64), [4, 2, 1], 2**30) == [4, 2, 1]


@pytest.mark.realdata
def test_snow_out_of_core_agrees_with_in_memory_and_truth(snow):
    """Real snow 100^3, a known affine; 10 MB budget (20 MB working set): bins 4 and 2 whole, bin 1 on 16^3 boxes.
    Measured: 0.014 px from the in-memory Phi and 0.013 px from the truth (corner displacements)."""
    axis = np.array([0.3, 0.5, 0.81])
    true = make_phi(translation_px=(2.7, -1.3, 3.4), rotation_deg=2.0 * axis / np.linalg.norm(axis),
                    strain=(0.01, -0.005, 0.008))
    moving = _deformed(snow, true)
    ref = register(snow, moving, threads=1)
    got = register(da.from_array(snow, chunks=(16, 100, 100)), da.from_array(moving, chunks=(16, 100, 100)),
                   threads=1, chunk_budget_mb=10)
    assert got.extra["out_of_core"]["levels"][-1]["route"] == "sampled"
    assert got.converged
    assert _corner_error(got.phi, ref.phi, snow.shape) < 0.05
    assert _corner_error(got.phi, true, snow.shape) < 0.05


def test_zarr_inputs_and_a_lazy_mask_rigid(tmp_path, pair):
    from tomo4d.io import open_volume, save_volume
    from tomo4d.volume import Volume

    fixed, _ = pair
    true = make_phi(translation_px=(0.7, -1.1, 0.4), rotation_deg=(1.0, 0.0, 0.5))
    moving = _deformed(fixed, true)
    paths = [save_volume(Volume(a, (1.0, 1.0, 1.0)), tmp_path / f"{n}.ome.zarr") for n, a in
             (("f", fixed), ("m", moving))]
    f, m = (open_volume(p) for p in paths)
    band = np.zeros(fixed.shape[0], bool)
    band[10:34] = True
    mask = da.broadcast_to(da.from_array(band[:, None, None], chunks=(8, 1, 1)), fixed.shape)
    ref = register(fixed, moving, mask=np.broadcast_to(band[:, None, None], fixed.shape), rigid=True, threads=1)
    got = register(f, m, mask=mask, rigid=True, threads=1, chunk_budget_mb=1.0)
    assert got.extra["out_of_core"]["levels"][-1]["route"] == "sampled"
    assert _corner_error(got.phi, ref.phi, fixed.shape) < 0.05
    assert _corner_error(got.phi, true, fixed.shape) < 0.05


def test_out_of_core_refuses_nan_as_read(pair):
    fixed, moving = pair
    bad = moving.copy()
    bad[20, 5, 5] = np.nan
    with pytest.raises(InputError, match="moving.*NaN"):
        register(da.from_array(fixed, chunks=8), da.from_array(bad, chunks=8), threads=1, chunk_budget_mb=1.0)


@pytest.mark.parametrize("bad", [-1, 0, "lots", float("nan")])
def test_register_refuses_a_bad_budget(pair, bad):
    with pytest.raises(InputError, match="chunk_budget_mb"):
        register(*pair, chunk_budget_mb=bad)


def test_cli_register_with_a_budget_reads_slab_by_slab_and_agrees(tmp_path, pair, capsys):
    """``tomo4d register --chunk-budget-mb``: lazy inputs, the fine level sampled, the result saved and near truth."""
    import json

    from tomo4d.cli import main
    from tomo4d.io import save_volume
    from tomo4d.volume import Volume

    paths = [save_volume(Volume(a, (1.0, 1.0, 1.0)), tmp_path / f"{n}.ome.zarr") for n, a in zip("fm", pair)]
    out = tmp_path / "phi.json"
    assert main(["register", *map(str, paths), "-o", str(out), "--chunk-budget-mb", "1.5", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    phi = np.asarray(saved["phi"])
    assert [r["route"] for r in saved["out_of_core"]["levels"]][-1] == "sampled"
    assert _corner_error(phi, TRUE, pair[0].shape) < 0.05
    assert np.allclose(np.asarray(got["phi"]), phi)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_spline_coefficients_in_blocks_are_scipys_prefilter(n):
    from concurrent.futures import ThreadPoolExecutor

    from scipy import ndimage

    from tomo4d.register._outofcore import _spline_coefficients

    box = np.random.default_rng(4).normal(size=(9, 14, 11)).astype(np.float32)
    with ThreadPoolExecutor(n) as ex:
        got = _spline_coefficients(box, 3, ex, n)
    want = ndimage.spline_filter(np.pad(box, 12, mode="edge"), 3, output=np.float64, mode="nearest")
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("order", [1, 3])
def test_apply_phi_slab_equals_the_whole_resampling(threads, order):
    """Slabs (z-parts side by side) of a lazy image reproduce apply_phi of the whole image."""
    import dask.array as da

    from tomo4d.register import apply_phi, apply_phi_slab

    rng = np.random.default_rng(5)
    img = ndimage_smooth(rng.normal(size=(48, 40, 36)).astype(np.float32))
    phi = np.eye(4)
    phi[:3, :3] += [[0, 0.01, -0.004], [-0.01, 0, 0.006], [0.004, -0.006, 0]]
    phi[:3, 3] = [1.3, -0.6, 2.1]
    whole = apply_phi(img, phi, order=order)
    lazy = da.from_array(img, chunks=(8, 40, 36))
    got = np.concatenate([apply_phi_slab(lazy, phi, a, b, order=order, threads=threads)
                          for a, b in ((0, 13), (13, 14), (14, 48))])
    np.testing.assert_allclose(got, whole, atol=1e-5 * float(np.ptp(img)))


def ndimage_smooth(a):
    from scipy import ndimage

    return ndimage.gaussian_filter(a, 1.5)
