"""``tomo4d segment``: train, apply, particles, evaluate."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

from dataclasses import replace

import click

from ..errors import InputError
from ._paths import declare_paths
from ._util import (
    budget_option,
    check_budget,
    emit,
    json_option,
    map_option,
    overwrite_option,
    parse_triple,
    progress_bar,
    relabel,
    slab_output,
    voxel_size_option,
)


def _sigmas(text):
    try:
        return tuple(float(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise InputError(f"--sigmas={text!r} must be comma-separated numbers, e.g. 0.7,1.6,3.5,5") from None



@click.group()
def segment():
    """Few-label segmentation of phases and particles (pixel classifier or U-Net)."""


@declare_paths(inputs=("image_path", "labels_path"), outputs=("output",))
@segment.command()
@click.option("--image", "image_path", required=True, type=click.Path(path_type=str),
              help="Grey-value volume or 2D TIFF.")
@click.option("--labels", "labels_path", required=True, type=click.Path(path_type=str),
              help="Integer labels of the same shape: 0 = unlabelled, 1, 2, ... classes.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=str),
              help="Model file (.npz for rf, .safetensors for unet).")
@click.option("--method", type=click.Choice(["rf", "unet"]), default="rf", show_default=True)
@click.option("--sigmas", default="0.7,1.6,3.5,5", show_default=True, help="rf: feature scales in voxels.")
@click.option("--ndim", type=click.Choice(["2", "3"]), default="2", show_default=True,
              help="rf: slice-wise (2) or 3D (3) features.")
@click.option("--trees", default=32, show_default=True, help="rf: number of trees.")
@click.option("--iterations", default=None, type=int, help="unet: training steps.")
@click.option("--small", is_flag=True, help="unet: small CPU configuration (8 filters, depth 2).")
@click.option("--threads", default=None, type=int, help="unet: torch CPU threads (overrides the global tomo4d --threads).")
@voxel_size_option
@click.option("--seed", default=0, show_default=True)
@map_option
@click.option("--overwrite", is_flag=True, help="Replace an existing model file.")
@json_option
def train(image_path, labels_path, output, method, sigmas, ndim, trees, iterations, small, threads, voxel_size,
          seed, label_map, overwrite, as_json):
    """Train a segmentation model from an image and sparse or slice labels (``rf``: the labels are read slab by
    slab, the image only around the labelled slabs)."""
    from ..segment import LabelSlabs, read_image, read_labels

    vs = parse_triple(voxel_size, name="--voxel-size")
    image = read_image(image_path, voxel_size_nm=vs)
    if method == "rf":
        labels = LabelSlabs(relabel(read_image(labels_path).data, label_map), name=f"labels {labels_path!r}")
    else:
        labels = relabel(read_labels(labels_path), label_map)
    with progress_bar("training") as progress:
        if method == "rf":
            from ..segment import FeatureSpec, train_pixel_classifier

            model = train_pixel_classifier(image, labels, features=FeatureSpec(sigmas=_sigmas(sigmas), ndim=int(ndim)),
                                           n_trees=trees, seed=seed, progress=progress)
        else:
            from ..segment import UNetConfig, train_unet

            cfg = UNetConfig.small() if small else UNetConfig()
            if iterations is not None:
                cfg = replace(cfg, iterations=iterations)
            model = train_unet(image, labels, config=cfg, seed=seed, threads=threads, progress=progress)
    model.save(output, overwrite=overwrite)
    info = {"model": output, "method": method, "classes": list(model.classes), "training": model.training}
    emit(info, as_json=as_json, text=f"wrote {output}: {model!r}")


@declare_paths(inputs=("model_path", "src"), outputs=("dst",))
@segment.command()
@click.argument("model_path", type=click.Path(path_type=str))
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--step", default=None, type=int, help="Time step (for a folder of per-step models).")
@click.option("--slab-depth", default=None, type=int, help="z-slices per chunk (default from a 256 MiB budget).")
@voxel_size_option
@overwrite_option
@json_option
def apply(model_path, src, dst, step, slab_depth, voxel_size, overwrite, as_json):
    """Segment volume SRC with MODEL into label volume DST (TIFF/Zarr), chunk by chunk."""
    from ..segment import load_model, predict_lazy, read_image, save_labels
    from ..volume import Volume, VolumeMetadata

    model = load_model(model_path)
    if model.__class__.__name__ == "StepModels":
        if step is None:
            raise InputError(f"{model_path!r} holds per-time-step models; pass --step N")
        model = model.model_for(step)
    vol = read_image(src, voxel_size_nm=parse_triple(voxel_size, name="--voxel-size"))
    lazy = predict_lazy(model, vol, slab_depth=slab_depth)

    out_vol = Volume(lazy, vol.voxel_size_nm, VolumeMetadata(name=f"segmentation of {vol.metadata.name}",
                                                             modality="label",
                                                             provenance=vol.metadata.provenance
                                                             + (f"segmented with {model_path}",)))
    with progress_bar(f"segmenting {src}") as progress:
        path = save_labels(out_vol, dst, overwrite=overwrite, progress=progress)
    info = {"output": str(path), "shape": list(vol.shape), "classes": list(model.classes)}
    emit(info, as_json=as_json, text=f"wrote {path}")


@declare_paths(inputs=("labels_path",), outputs=("dst",))
@segment.command()
@click.argument("labels_path", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--class", "particle_class", default=None, type=int,
              help="Label value of the particle phase (default: every non-zero voxel).")
@click.option("--min-volume-nm3", default=0.0, show_default=True, help="Remove smaller objects.")
@click.option("--h-nm", default=None, type=float, help="Watershed marker depth in nm (default half a voxel).")
@click.option("--no-split", is_flag=True, help="Connected components only (no watershed).")
@budget_option
@voxel_size_option
@overwrite_option
@json_option
def particles(labels_path, dst, particle_class, min_volume_nm3, h_nm, no_split, chunk_budget_mb, voxel_size, overwrite,
              as_json):
    """Particle (instance) labels from a phase segmentation LABELS, written to DST; a volume whose working set
    exceeds --chunk-budget-mb is labelled slab by slab (the same labels)."""
    import math

    import numpy as np

    from .._chunks import fits_budget
    from ..quantify.particles_chunked import BYTES_PER_VOXEL
    from ..segment import label_particles, read_image, save_labels

    budget = check_budget(chunk_budget_mb)
    vol = read_image(labels_path, voxel_size_nm=parse_triple(voxel_size, name="--voxel-size"))
    if not fits_budget(vol.shape, BYTES_PER_VOXEL, budget):
        min_vox = int(math.ceil(float(min_volume_nm3) / float(np.prod(vol.voxel_size_nm)) - 1e-9))
        path, n, n_removed, vols = _particles_streamed(vol, dst, particle_class=particle_class, min_voxels=min_vox,
                                                       h_nm=h_nm, split=not no_split, budget=budget,
                                                       overwrite=overwrite)
    else:
        res = label_particles(vol.numpy(), particle_class=particle_class, voxel_size_nm=vol.voxel_size_nm,
                              min_volume_nm3=min_volume_nm3, split=not no_split, h_nm=h_nm)
        path = save_labels(res.labels, dst, voxel_size_nm=vol.voxel_size_nm, name="particles", overwrite=overwrite)
        n, n_removed, vols = res.n_particles, res.n_removed, res.volumes_nm3
    info = {"output": str(path), "n_particles": n, "n_removed": n_removed,
            "median_volume_nm3": float(sorted(vols)[len(vols) // 2]) if len(vols) else None}
    emit(info, as_json=as_json,
         text=f"wrote {path}: {n} particles ({n_removed} small objects removed)")


def _particles_streamed(vol, dst, *, particle_class, min_voxels, h_nm, split, budget, overwrite):
    """(path, n, removed, volumes nm^3) of particles labelled slab by slab (watershed cluster by cluster) into a
    progress store: DST itself when it is OME-Zarr (published atomically), else a scratch store beside DST
    converted chunk by chunk (:func:`._util.slab_output`)."""
    import numpy as np

    from .._chunks import SlabStore, plan_slabs
    from ..io import open_volume
    from ..quantify.particles_chunked import BYTES_PER_VOXEL, label_particles_chunked, particle_properties_chunked
    from ..segment import save_labels
    from ..segment.split_chunked import split_particles_chunked

    with slab_output(dst) as (where, scratch):
        store = SlabStore(where, shape=vol.shape, dtype=np.int32, voxel_size_nm=vol.voxel_size_nm, name="particles",
                          slabs=plan_slabs(vol.shape, bytes_per_voxel=BYTES_PER_VOXEL, chunk_budget_mb=budget),
                          key=f"{particle_class}:{min_voxels}:{h_nm}:split={split}")
        kw = dict(particle_class=particle_class, voxel_size_nm=vol.voxel_size_nm, min_voxels=min_voxels, out=store,
                  publish=False)
        res = split_particles_chunked(vol.data, h_nm=h_nm, chunk_budget_mb=budget,
                                      scratch_dir=None if scratch is None else scratch / "split", **kw) \
            if split else label_particles_chunked(vol.data, chunk_budget_mb=budget, **kw)
        table = particle_properties_chunked(store, voxel_size_nm=vol.voxel_size_nm, chunk_budget_mb=budget)
        path = store.publish(overwrite=overwrite)
        if scratch is not None:
            path = save_labels(open_volume(path), dst, name="particles", overwrite=overwrite)
        return path, res.n_particles, res.n_removed, np.asarray(table.volume_um3) * 1e9


@declare_paths(inputs=("pred_path", "truth_path"))
@segment.command()
@click.argument("pred_path", type=click.Path(path_type=str))
@click.argument("truth_path", type=click.Path(path_type=str))
@click.option("--particles", "as_particles", is_flag=True,
              help="Both are particle labels: match particles by IoU instead of scoring classes.")
@click.option("--iou-threshold", default=0.5, show_default=True, help="Particles: minimum IoU of a match.")
@click.option("--ignore-label", default=None, type=int, help="Truth value not evaluated (e.g. 0 = unlabelled).")
@click.option("--tolerance-nm", default=None, type=float, help="Boundary tolerance (default 2 voxels).")
@map_option
@budget_option
@json_option
def evaluate(pred_path, truth_path, as_particles, iou_threshold, ignore_label, tolerance_nm, label_map, chunk_budget_mb,
             as_json):
    """Score segmentation PRED against TRUTH: Dice, IoU, boundary F1 per class (or particle F1); classes of volumes
    over --chunk-budget-mb are scored slab by slab (the same scores)."""
    from .._chunks import fits_budget
    from ..segment import evaluate_segmentation, match_particles, read_image, read_labels
    from ..segment.evaluate_chunked import BYTES_PER_VOXEL, evaluate_segmentation_chunked

    budget = check_budget(chunk_budget_mb)
    tvol = read_image(truth_path)
    if not as_particles and len(tvol.shape) == 3 and not fits_budget(tvol.shape, BYTES_PER_VOXEL, budget):
        s = evaluate_segmentation_chunked(read_image(pred_path).data, relabel(tvol.data, label_map),
                                          ignore_label=ignore_label, voxel_size_nm=tvol.voxel_size_nm,
                                          boundary_tolerance_nm=tolerance_nm, chunk_budget_mb=budget)
        return _emit_scores(s, as_json)
    pred = read_labels(pred_path)
    truth = relabel(read_labels(truth_path), label_map)
    if as_particles:
        s = match_particles(pred, truth, iou_threshold=iou_threshold)
        emit(s.to_dict, as_json=as_json, text=[
            f"particles: predicted {s.n_predicted}, true {s.n_true}, matched {s.n_matched} "
            f"(IoU >= {s.iou_threshold:g})",
            f"precision {s.precision:.4f}  recall {s.recall:.4f}  F1 {s.f1:.4f}  "
            f"mean matched IoU {s.mean_matched_iou:.4f}"])
        return
    s = evaluate_segmentation(pred, truth, ignore_label=ignore_label, voxel_size_nm=tvol.voxel_size_nm,
                              boundary_tolerance_nm=tolerance_nm)
    _emit_scores(s, as_json)


def _emit_scores(s, as_json: bool) -> None:
    emit(s.to_dict, as_json=as_json, text=[
        f"{'class':>6} {'dice':>8} {'iou':>8} {'bound.F1':>9} {'true vox':>10} {'pred vox':>10}",
        *(f"{c.label:>6} {c.dice:8.4f} {c.iou:8.4f} {c.boundary_f1:9.4f} {c.n_true_voxels:>10} "
          f"{c.n_predicted_voxels:>10}" for c in s.classes),
        f"accuracy {s.accuracy:.4f} over {s.n_voxels} voxels; boundary tolerance {s.boundary_tolerance_nm:g} nm"])
