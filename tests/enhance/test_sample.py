"""Volume enhancement: streaming, z interpolation, provenance, input checks, uncertainty."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tomo4d import InputError, Volume  # noqa: E402


def test_enhance_volume_shape_voxel_size_provenance(model, synth_pair):
    from tomo4d.enhance import enhance_volume

    lq, _ = synth_pair
    calls = []
    out = enhance_volume(model, lq, steps=3, seed=5, tile=64, overlap=16, progress=lambda d, t: calls.append((d, t)))
    assert out.is_lazy and not calls  # nothing computed yet
    assert out.shape == (16, 96, 96) and out.voxel_size_nm == (50.0, 50.0, 50.0)
    assert out.dtype == np.uint16
    arr = out.numpy()
    assert calls[-1] == (8, 8)
    assert "steps=3, seed=5" in out.metadata.provenance[-1]
    assert out.metadata.extra["enhance"]["steps"] == 3
    # deterministic in the seed
    again = enhance_volume(model, lq, steps=3, seed=5, tile=64, overlap=16).numpy()
    np.testing.assert_array_equal(arr, again)


def test_enhance_volume_does_not_depend_on_the_torch_threads_of_the_dask_workers(model, synth_pair):
    """torch's CPU results change with its thread count, a per-OS-thread setting (OpenMP): a dask worker
    left on another count than the caller (by earlier work in that thread) must not change the output."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import torch

    from tomo4d._threads import torch_threads
    from tomo4d.enhance import enhance_volume

    lq, _ = synth_pair
    with torch_threads(2):
        ref = enhance_volume(model, lq, steps=3, seed=5, tile=64, overlap=16).data.compute(scheduler="synchronous")
        with ThreadPoolExecutor(2, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            with dask.config.set(pool=pool, scheduler="threads"):
                out = enhance_volume(model, lq, steps=3, seed=5, tile=64, overlap=16).numpy()
    np.testing.assert_array_equal(out, ref)


def test_z_interpolation_equals_cubic_upsampling_of_the_slice_stack(model, synth_pair):
    from tomo4d.enhance import enhance_volume, upsample2_axis

    lq, _ = synth_pair
    flat = enhance_volume(model, lq, steps=2, out_dtype=np.float32, z_interp=False).numpy()
    iso = enhance_volume(model, lq, steps=2, out_dtype=np.float32, group=3).numpy()
    assert flat.shape == (8, 96, 96)
    np.testing.assert_allclose(iso, upsample2_axis(flat, 0), rtol=1e-5, atol=1e-2)  # float32 rounding at ~1e4


def test_streaming_writes_in_bounded_memory(model, synth_pair, tmp_path):
    from tomo4d.enhance import enhance_volume
    from tomo4d.enhance.sample import _SliceEngine
    from tomo4d.io import open_volume, save_volume

    lq, _ = synth_pair
    out = enhance_volume(model, lq, steps=2, group=2)
    p = save_volume(out, tmp_path / "e.tif")
    back = open_volume(p)
    assert back.shape == out.shape and back.voxel_size_nm == (50.0, 50.0, 50.0)
    # the engine keeps a window of slices, not the volume
    eng = _SliceEngine(model, lq.data, steps=2, seed=0, tile=512, overlap=64, batch=4, group=2, progress=None)
    for j in range(16):
        eng.read_output([j], True)
        assert len(eng.cache) <= eng.KEEP_GROUPS * 2
    assert eng.n_enhanced == 8


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_every_slice_is_enhanced_once_whatever_the_order_of_requests(model, synth_pair, scheduler):
    """Concurrent dask chunks share the engine's groups instead of evicting each other's (a slice cache evicted by
    distance enhanced every slice 6-8 times over)."""
    import dask

    from tomo4d.enhance import enhance_volume, sample

    lq, _ = synth_pair
    seen = []
    orig = sample.enhance_slices

    def counting(model, slab, **kw):
        seen.append(len(slab))
        return orig(model, slab, **kw)

    lq32 = Volume(np.concatenate([lq.numpy()] * 4), lq.voxel_size_nm)
    ref = None
    for order in (None, "reversed"):
        seen.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sample, "enhance_slices", counting)
            out = enhance_volume(model, lq32, steps=1, group=2, out_dtype=np.float32)
            with dask.config.set(scheduler=scheduler, num_workers=2):
                if order is None:
                    got = out.data.compute()
                else:
                    got = np.concatenate([out.data[z0:z0 + 4].compute() for z0 in range(60, -1, -4)][::-1])
        assert sum(seen) == 32, (order, sum(seen))
        ref = got if ref is None else ref
        np.testing.assert_array_equal(got, ref)


def test_enhancement_sharpens_edges(model, synth_pair):
    """The tiny model's output is closer to HQ than bicubic up-sampling is."""
    from tomo4d.enhance import bicubic_volume, enhance_volume

    lq, hq = synth_pair
    enh = enhance_volume(model, lq, steps=4, out_dtype=np.float32).numpy()
    bic = bicubic_volume(lq).numpy()
    ref = hq.numpy().astype(np.float32)
    inner = (slice(2, -2), slice(8, -8), slice(8, -8))
    err_e = np.mean(np.abs(enh - ref)[inner])
    err_b = np.mean(np.abs(bic - ref)[inner])
    assert err_e < 0.9 * err_b, (err_e, err_b)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_dtype_not_trained_on_is_rejected(model, synth_pair, dtype):
    from tomo4d.enhance import enhance_volume

    lq, _ = synth_pair
    with pytest.raises(InputError, match="dtype"):
        enhance_volume(model, Volume(lq.numpy().astype(dtype), 100.0))


def test_voxel_size_not_trained_on_is_rejected(model, synth_pair):
    from tomo4d.enhance import enhance_volume

    lq, _ = synth_pair
    with pytest.raises(InputError, match="voxel size"):
        enhance_volume(model, Volume(lq.numpy(), 50.0))
    enhance_volume(model, Volume(lq.numpy(), 50.0), check_voxel_size=False)  # explicit opt-out works


def test_uncertainty_maps(model, synth_pair):
    from tomo4d.enhance import enhance_with_uncertainty

    lq, _ = synth_pair
    res = enhance_with_uncertainty(model, lq, n_samples=3, steps=3)
    assert res.mean.shape == (16, 96, 96) and res.spread.shape == (16, 96, 96)
    assert res.consistency.shape == lq.shape
    assert res.spread_mean > 0 and res.spread_p99 >= res.spread_mean
    # the enhanced volume is consistent with its LQ input at the level of plain bicubic up-sampling
    assert res.consistency_mean < 1.5 * res.consistency_bicubic_mean
    with pytest.raises(InputError, match="n_samples"):
        enhance_with_uncertainty(model, lq, n_samples=1)
    with pytest.raises(InputError, match="slab"):
        enhance_with_uncertainty(model, lq, n_samples=2, slab=0)


@pytest.mark.parametrize("z_interp", [True, False])
def test_uncertainty_streams_slab_by_slab_with_the_whole_volume_result(model, synth_pair, tmp_path, z_interp):
    """Slabs of 3 LQ slices, spilled to memory maps, give the maps and summaries of one 8-slice slab."""
    from tomo4d.enhance import enhance_volume, enhance_with_uncertainty
    from tomo4d.enhance.data import upsample2_axis, upsample2_xy
    from tomo4d.enhance.uncertainty import data_consistency

    lq, _ = synth_pair
    whole = enhance_with_uncertainty(model, lq, n_samples=2, steps=2, slab=8, z_interp=z_interp)
    done = []
    slabs = enhance_with_uncertainty(model, lq, n_samples=2, steps=2, slab=3, z_interp=z_interp,
                                     spill_dir=tmp_path / "spill", progress=lambda d, n: done.append((d, n)))
    assert done == [(6, 16), (12, 16), (16, 16)]
    assert isinstance(slabs.mean.data, np.memmap) and (tmp_path / "spill" / "spread.npy").is_file()
    for a, b in ((whole.mean, slabs.mean), (whole.spread, slabs.spread), (whole.consistency, slabs.consistency)):
        # float32 rounding of the network differs with the tile batches (values up to ~1e4): atol 1e-2
        np.testing.assert_allclose(np.asarray(b.data), np.asarray(a.data), rtol=1e-5, atol=1e-2)
    for k in ("spread_mean", "spread_p99", "consistency_mean", "consistency_p99", "consistency_bicubic_mean"):
        assert getattr(slabs, k) == pytest.approx(getattr(whole, k), rel=1e-3), k
    # against the definition on whole volumes: the mean of the samples and bicubic's consistency
    e = [enhance_volume(model, lq, steps=2, seed=s, out_dtype=np.float32, z_interp=z_interp).numpy()
         for s in (0, 1)]
    np.testing.assert_allclose(np.asarray(whole.mean.data), (e[0] + e[1]) / 2, rtol=1e-5, atol=1e-2)
    q = lq.numpy().astype(np.float32)
    bic = upsample2_xy(upsample2_axis(q, 0) if z_interp else q)
    info = model.info
    ref = data_consistency(info.hq_scaling.inverse(info.lq_scaling.forward(bic)), q, model, z_interp=z_interp)
    assert whole.consistency_bicubic_mean == pytest.approx(float(ref.mean()), rel=1e-5)
    assert slabs.consistency_bicubic_mean == pytest.approx(float(ref.mean()), rel=1e-5)   # no network: exact


@pytest.mark.slow
def test_evaluate_centres_the_slice_block_and_uses_label_guided_edges(model, synth_pair):
    """z_centre moves the evaluated block; edge_labels must be on the HQ grid (clear error otherwise)."""
    from tomo4d.enhance import evaluate

    lq, hq = synth_pair
    ev = evaluate(lq, hq, models={"InDI": model}, steps=2, register=False, slices="all", max_slices=4,
                  z_centre=2)
    assert ev.slices == (0, 1, 2, 3)
    ev = evaluate(lq, hq, models={"InDI": model}, steps=2, register=False, slices="all", max_slices=4,
                  z_centre=15)
    assert ev.slices == (12, 13, 14, 15)
    with pytest.raises(InputError, match="edge_labels"):
        evaluate(lq, hq, models={"InDI": model}, steps=2, register=False, slices="all", max_slices=4,
                 edge_labels=np.zeros((3, 3, 3), np.uint8), edge_foreground=[1])


def _float_model(model):
    """The tiny model relabelled as trained on float32 volumes (for NaN inputs, which integers cannot hold)."""
    import dataclasses

    from tomo4d.enhance.model import EnhanceModel

    return EnhanceModel(model.net, dataclasses.replace(model.info, input_dtype="float32"))


def _nan_lq(synth_pair, z=5):
    lq, _ = synth_pair
    a = lq.numpy().astype(np.float32)
    a[z, 10, 10:14] = np.nan
    return Volume(a, lq.voxel_size_nm)


def test_enhance_refuses_nan_voxels_up_front_in_memory(model, synth_pair):
    from tomo4d.enhance import enhance_volume, enhance_with_uncertainty

    fm = _float_model(model)
    bad = _nan_lq(synth_pair)
    with pytest.raises(InputError, match=r"volume holds 4 non-finite \(NaN/Inf\) voxels"):
        enhance_volume(fm, bad, steps=1)
    with pytest.raises(InputError, match=r"volume holds 4 non-finite"):
        enhance_with_uncertainty(fm, bad, n_samples=2, steps=1)


def test_enhance_refuses_nan_voxels_chunk_by_chunk_when_lazy(model, synth_pair):
    import dask.array as da

    from tomo4d.enhance import enhance_volume

    fm = _float_model(model)
    bad = _nan_lq(synth_pair)
    lazy = Volume(da.from_array(bad.numpy(), chunks=(2, 48, 48)), bad.voxel_size_nm)
    out = enhance_volume(fm, lazy, steps=1, tile=64, overlap=16, group=2, z_interp=False)   # no pass yet
    with pytest.raises(InputError, match=r"volume holds 4 non-finite .* in z-slices 4..5 \(first at z = 5"):
        out.numpy()


@pytest.mark.parametrize("kw, pattern", [
    ({"steps": 0}, r"steps=0 is out of range; give a whole number >= 1"),
    ({"steps": 2.5}, r"steps=2.5 is not an integer"),
    ({"steps": "3"}, r"steps='3' is not an integer"),
    ({"batch": 0}, r"batch=0 is out of range"),
    ({"group": 0}, r"group=0 is out of range"),
    ({"tile": 8}, r"tile=8 is out of range; give a whole number >= 16"),
    ({"tile": 64.5}, r"tile=64.5 is not an integer"),
    ({"overlap": -1}, r"overlap=-1 is out of range"),
    ({"tile": 64, "overlap": 32}, r"overlap=32 is out of range; it must be less than half the tile \(64\)"),
    ({"seed": -1}, r"seed=-1 is out of range"),
])
def test_enhance_volume_refuses_options_it_used_to_replace(model, synth_pair, kw, pattern):
    from tomo4d.enhance import enhance_volume

    lq, _ = synth_pair
    with pytest.raises(InputError, match=pattern):
        enhance_volume(model, lq, **kw)


@pytest.mark.parametrize("kw, pattern", [({"n_samples": 0}, r"n_samples=0 is out of range; give a whole number >= 2"),
                                         ({"n_samples": 2.5}, r"n_samples=2.5 is not an integer"),
                                         ({"n_samples": 2, "steps": 0}, r"steps=0 is out of range"),
                                         ({"n_samples": 2, "batch": 0}, r"batch=0 is out of range")])
def test_uncertainty_refuses_bad_counts(model, synth_pair, kw, pattern):
    from tomo4d.enhance import enhance_with_uncertainty

    lq, _ = synth_pair
    with pytest.raises(InputError, match=pattern):
        enhance_with_uncertainty(model, lq, **kw)


@pytest.mark.parametrize("bad, pattern", [(None, r"model is None, not an enhancement model"),
                                          ("model", r"model is str, not an enhancement model")])
def test_enhance_volume_names_a_missing_model(synth_pair, bad, pattern):
    from tomo4d.enhance import enhance_volume

    lq, _ = synth_pair
    with pytest.raises(InputError, match=pattern):
        enhance_volume(bad, lq)


@pytest.mark.parametrize("bad, pattern", [(None, r"volume is None, not a volume"),
                                          ("lq.tif", r"volume is 'lq.tif', not a volume")])
def test_enhance_volume_names_a_missing_volume(model, bad, pattern):
    from tomo4d.enhance import enhance_volume

    with pytest.raises(InputError, match=pattern):
        enhance_volume(model, bad)


@pytest.mark.parametrize("call, pattern", [
    ("evaluate", r"steps=0 is out of range"),
    ("sweep", r"steps\[0\]=0 is out of range"),
    ("sweep_frac", r"steps\[1\]=2.5 is not an integer"),
    ("sweep_empty", r"steps is empty"),
])
def test_evaluate_and_sweep_refuse_steps_they_used_to_replace(model, synth_pair, call, pattern):
    from tomo4d.enhance import evaluate, sweep_steps

    lq, hq = synth_pair
    with pytest.raises(InputError, match=pattern):
        if call == "evaluate":
            evaluate(lq, hq, models={"InDI": model}, steps=0, register=False)
        elif call == "sweep":
            sweep_steps(model, lq, hq, steps=[0, 1], register=False)
        elif call == "sweep_frac":
            sweep_steps(model, lq, hq, steps=[1, 2.5], register=False)
        else:
            sweep_steps(model, lq, hq, steps=[], register=False)


@pytest.mark.parametrize("args, pattern", [(["--steps", "0"], "steps=0 is out of range"),
                                           (["--batch", "0"], "batch=0 is out of range"),
                                           (["--tile", "8"], "tile=8 is out of range"),
                                           (["--samples", "2", "--steps", "0"], "steps=0 is out of range")])
def test_cli_apply_refuses_counts_it_used_to_replace(model, trained, synth_pair, tmp_path, capsys, args, pattern):
    from tomo4d.cli import main
    from tomo4d.io import save_volume

    lq, _ = synth_pair
    src = save_volume(lq, tmp_path / "lq.tif")
    dst = tmp_path / "out.tif"
    assert main(["enhance", "apply", str(trained[0]), str(src), str(dst), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and pattern in err[0] and not dst.exists()
