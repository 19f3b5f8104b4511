"""The ``segment`` and ``particles`` stages.

* ``segment`` (per step): a pixel classifier (:func:`tomo4d.segment.train_pixel_classifier`,
  multiscale features + random forest) is trained (with step T0) on the labelled voxels of T0
  (``segment.labels``, 0 = unlabelled; or the fully labelled ``segment.slices`` of it, where every
  value is a class), pooled with those of further steps (a list of label files and
  ``segment.label_steps``: phases that appear only later, such as lithiated silicon, need a labelled
  later step), and saved to ``models/segment_pixel_classifier.npz``; every step is then
  predicted with it (:func:`tomo4d.segment.predict_labels`) -> ``volumes/segment_<step>.ome.zarr``
  and ``tables/segment_<step>`` (voxels per class; with ``truth.labels`` Dice, IoU and boundary F1
  per class, on a labelled step only over the voxels not used for training).
* ``particles`` (once, after segment and dvc): particles of the particle class per step
  (:func:`tomo4d.segment.label_particles`), their geometry (:func:`tomo4d.quantify.particle_properties`)
  and tracks (:func:`tomo4d.quantify.track_particles`, with the DVC fields T0 -> Tn as motion
  prediction when the dvc stage runs) -> ``volumes/particles_<step>.ome.zarr``, ``tables/particles``,
  ``tables/particles_summary`` (with ``truth.particles``: detection precision/recall/F1 and the
  fraction of track links that follow one true particle) and ``tables/tracks``.

Both work on the analysis series and grid (:mod:`.series`): with ``enhance.apply_to_series`` the classifier is
trained and applied on the enhanced series (labels of ``segment.labels`` / ``inputs.labels`` and the truth
repeated x2 per axis, each plane of ``segment.slices`` covering two enhanced planes), the label volumes are
twice finer and ``particles.min_voxels`` still counts ``inputs.series`` voxels (the same physical size).

Out of core (:mod:`.chunked`): a step whose working set exceeds ``chunk_budget_mb`` is predicted slab by slab into
the progress store of its label volume (resumable; bit-identical labels), and its particles are labelled slab by
slab (components merged exactly across slab faces; with ``particles.split`` the distance watershed one cluster of
touching particles at a time) and measured from per-slab moments, all equal to the in-memory labels; tracking
reads the label stores slab by slab; the training labels are read as planes or slabs, never as a volume
(:func:`_training_labels`); the segmentation truth scores of a streamed step are computed slab by slab
(:mod:`tomo4d.segment.evaluate_chunked`), and so are the particle truth scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .._chunks import SlabStore
from ..quantify.particles_chunked import BYTES_PER_VOXEL as PARTICLE_BYTES_PER_VOXEL
from .chunked import budget_mb, lazy_labels, lazy_segment, segment_path, streams
from .series import (
    analysis_labels,
    analysis_scale,
    analysis_voxel_size_nm,
    read_series,
    reads_series,
    series_path,
)
from .stage import Stage, rel, section_options
from .stage_io import load_labels, save_label_volume, write_tables

__all__ = ["PARTICLES", "SEGMENT", "ParticlesResult", "SegmentStep"]

log = logging.getLogger(__name__)

MODEL = "models/segment_pixel_classifier.npz"


@dataclass(frozen=True, eq=False)
class SegmentStep:
    """One step of the segment stage: its labels, its class table, and (T0 only) the trained model."""

    labels: np.ndarray | None
    classes: dict
    model: object | None = None
    stored: object | None = None  # streamed (over chunk_budget_mb): the StoredPrediction to publish
    later: dict | None = None     # T0: {later labelled step: its labels}, predicted from its training features


def _training_labels(ctx, path):
    """The training labels of one label file on the analysis grid, as a slab source the trainer reads slab by
    slab (:mod:`tomo4d.segment.training_labels`): with ``segment.slices`` only those planes, every value a class
    (0 becomes 1); else the whole file, lazily (0 = unlabelled).  Never the whole volume in memory: at 1024^3
    the file as read plus an int32 copy and a mask made the segment stage's peak 4.8 GiB, and a dense uint8
    copy is still 8 GiB at 2048^3."""
    from ..segment import LabelPlanes, LabelSlabs, read_image, read_label_planes

    sec, scale = ctx.experiment.segment, analysis_scale(ctx.experiment)
    if sec.slices is None:
        return LabelSlabs(read_image(path).data, name=f"segment labels {str(path)!r}", scale=scale)
    planes_at = sorted(set(sec.slices))
    shape, planes = read_label_planes(path, sec.slice_axis, planes_at)
    return LabelPlanes(shape, sec.slice_axis, planes_at, planes, shift=1, scale=scale)


class _Unused:
    """The voxels of a labelled step not used for training (scored against ``truth.labels``), read slab by slab:
    ``region[z0:z1]`` (full planes) is a bool numpy slab."""

    def __init__(self, src):
        self.src, self.shape, self.ndim = src, src.shape, 3

    def __getitem__(self, key) -> np.ndarray:
        z = key[0] if isinstance(key, tuple) else key
        return self.src.read(*z.indices(self.shape[0])[:2]) == 0

    def whole(self) -> np.ndarray:
        return self.src.read(0, self.shape[0]) == 0


def _image(ctx, step: int):
    return read_series(ctx, step)  # the analysis series, lazy (slabs)


def _train(ctx):
    """(model, {step: labels}): the pixel classifier trained on every labelled step (``segment.labels`` /
    ``label_steps``), pooled.  When T0 is the first labelled step and the feature stacks of the labelled steps fit
    ``chunk_budget_mb`` together, each labelled step's features are computed once for the training and its
    prediction (:func:`tomo4d.segment.train_and_predict`, ``every_image``), and the labels of every labelled step
    come back (a later step's are handed to that step, :func:`_hand_on`); with only T0's stack within the budget,
    T0's labels; else none (the labelled slabs are read for the training and every step is predicted on its own)."""
    from ..segment import FeatureSpec, train_and_predict, train_pixel_classifier

    sec = ctx.experiment.segment
    pairs = ctx.inputs.segment_labels
    images = [_image(ctx, step) for step, _ in pairs]
    labels = [_training_labels(ctx, path) for _, path in pairs]
    opts = dict(features=FeatureSpec(sigmas=tuple(sec.sigmas), ndim=sec.feature_ndim), n_trees=sec.n_trees,
                max_samples_per_class=sec.max_samples_per_class, seed=sec.seed)
    one = len(images) == 1
    if pairs[0][0] == 0:
        every = sum(im.data.size for im in images) * 4  # the stacks besides the float32 images
        if budget_mb(ctx) * 2**20 - every > 0 and not one:
            model, preds = train_and_predict(images, labels, max_feature_bytes=int(budget_mb(ctx) * 2**20 - every),
                                             every_image=True, **opts)
            return model, {step: p for (step, _), p in zip(pairs, preds) if p is not None}
        budget = budget_mb(ctx) * 2**20 - images[0].data.size * 4
        if budget > 0:
            model, pred = train_and_predict(images[0] if one else images, labels[0] if one else labels,
                                            max_feature_bytes=int(budget), **opts)
            return model, {0: pred}
    return train_pixel_classifier(images[0] if one else images, labels[0] if one else labels, **opts), {}


def _handed_path(out, name: str):
    from .runner import STATE_DIR

    return out / STATE_DIR / "segment_handed_on" / f"{name}.npz"


def _model_digest(out) -> str:
    import hashlib

    return hashlib.sha256((out / MODEL).read_bytes()).hexdigest()


def _hand_on(out, ctx, labels: dict) -> None:
    """Keep the labels T0's training predicted for later labelled steps (with the digest of the model file that
    made them) for those steps to take (:func:`_handed_on`) instead of computing their features again."""
    from ..io import atomic_output

    digest = _model_digest(out)
    for step, pred in labels.items():
        path = _handed_path(out, ctx.inputs.names[step])
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=True) as tmp, open(tmp, "wb") as f:
            np.savez(f, labels=pred, model_sha256=np.asarray(digest))


def _handed_on(ctx, step: int):
    """The labels T0 handed on to ``step`` if they were made by the model now in the run folder (then removed),
    else None."""
    path = _handed_path(ctx.out, ctx.inputs.names[step])
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            pred = z["labels"] if str(z["model_sha256"]) == _model_digest(ctx.out) else None
    except (OSError, ValueError, KeyError):
        pred = None
    path.unlink(missing_ok=True)
    return pred


def _class_table(ctx, step: int, pred: np.ndarray, classes, region) -> dict:
    from ..segment import evaluate_segmentation

    n = np.asarray([np.count_nonzero(pred == c) for c in classes], np.int64)
    cols = _count_columns(ctx, step, classes, n, pred.size)
    if ctx.inputs.truth_labels:
        truth = analysis_labels(ctx, ctx.inputs.truth_labels[step])
        sc = evaluate_segmentation(pred, truth, classes=list(classes), region=None if region is None else region.whole(),
                                   voxel_size_nm=analysis_voxel_size_nm(ctx))
        _score_columns(cols, classes, sc, np.asarray([np.count_nonzero(truth == c) for c in classes]), truth.size)
    return cols


def _count_columns(ctx, step: int, classes, n_voxels: np.ndarray, size: int) -> dict:
    return {"step": np.asarray([ctx.inputs.names[step]] * len(classes)), "class": np.asarray(classes, np.int64),
            "n_voxels": n_voxels, "volume_fraction": n_voxels / size}


def _score_columns(cols: dict, classes, sc, true_counts: np.ndarray, size: int) -> None:
    by = {c.label: c for c in sc.classes}
    cols["true_volume_fraction"] = true_counts / size
    for name in ("dice", "iou", "boundary_f1"):
        cols[name] = np.asarray([getattr(by[c], name) if c in by else np.nan for c in classes], float)
    cols["accuracy"] = np.full(len(classes), sc.accuracy)


def _streamed_scores(ctx, step: int, store, classes, region, cols: dict) -> None:
    """The truth scores of a streamed step, slab by slab (:func:`tomo4d.segment.evaluate_chunked`, the same
    numbers as in memory)."""
    from .._array import read_box
    from .._chunks import plan_slabs
    from ..segment.evaluate_chunked import evaluate_segmentation_chunked

    truth = lazy_labels(ctx, ctx.inputs.truth_labels[step])
    sc = evaluate_segmentation_chunked(store, truth, classes=list(classes), region=region,
                                       voxel_size_nm=analysis_voxel_size_nm(ctx), chunk_budget_mb=budget_mb(ctx))
    counts = np.zeros(len(classes), np.int64)
    for z0, z1 in plan_slabs(truth.shape, bytes_per_voxel=9, chunk_budget_mb=budget_mb(ctx)):
        slab = read_box(truth, (slice(z0, z1), slice(None), slice(None)))
        counts += np.asarray([np.count_nonzero(slab == c) for c in classes], np.int64)
    _score_columns(cols, classes, sc, counts, int(np.prod(truth.shape)))


def _segment_step(ctx, step, previous):
    from ..segment import PixelClassifier, predict_labels

    sec = ctx.experiment.segment
    if step == 0:
        model, preds = _train(ctx)
        pred, later = preds.pop(0, None), preds
    else:
        model, later = PixelClassifier.load(ctx.out / MODEL), {}
        pred = _handed_on(ctx, step)
    offset, region = (1 if sec.slices is not None else 0), None
    labelled = dict(ctx.inputs.segment_labels)
    if step in labelled and ctx.inputs.truth_labels:  # score only the voxels not used for training
        region = _Unused(_training_labels(ctx, labelled[step]))
    image = _image(ctx, step)
    classes = [c - offset for c in model.classes]
    if pred is None:
        if streams(ctx, image.shape, model.bytes_per_slice(*image.shape[1:]) / (image.shape[1] * image.shape[2])):
            return _segment_streamed(ctx, step, model, image, offset, classes, region)
        pred = predict_labels(model, image)
    pred = (pred.astype(np.int64) - offset).astype(pred.dtype)
    return SegmentStep(labels=pred, classes=_class_table(ctx, step, pred, classes, region),
                       model=model if step == 0 else None, later=later)


def _segment_streamed(ctx, step, model, image, offset, classes, region):
    """The step predicted slab by slab into ``volumes/segment_<step>.ome.zarr``'s progress store (resumable,
    published by the save; :func:`tomo4d.segment.predict_chunked.predict_to_store`), the class table from the
    per-slab counts (with ``truth.labels`` the scores slab by slab too)."""
    from ..segment.predict_chunked import predict_to_store

    src = series_path(ctx, step)
    st = src.stat()
    res = predict_to_store(model, image, segment_path(ctx.out, ctx.inputs.names[step]),
                           voxel_size_nm=analysis_voxel_size_nm(ctx), chunk_budget_mb=budget_mb(ctx),
                           key=f"{src}:{st.st_size}:{st.st_mtime_ns}", offset=offset,
                           name=f"segmentation {ctx.inputs.names[step]}", publish=False)
    log.info("segment %s: streamed in %d slabs (%d resumed)", ctx.inputs.names[step], res.n_slabs, res.n_resumed)
    table = _count_columns(ctx, step, classes, np.asarray(res.counts, np.int64), int(np.prod(image.shape)))
    if ctx.inputs.truth_labels:
        _streamed_scores(ctx, step, res.store, classes, region, table)
    return SegmentStep(labels=None, classes=table, model=model if step == 0 else None, stored=res)


def _segment_save(result, out, ctx, step):
    name = ctx.inputs.names[step]
    paths = ()
    if result.model is not None:
        paths += (rel(out, result.model.save(out / MODEL, overwrite=True)),)
        if result.later:
            _hand_on(out, ctx, result.later)
    if result.stored is not None:  # streamed: every slab is in the progress store
        paths += (rel(out, result.stored.store.publish()),)
    else:
        paths += (save_label_volume(result.labels, out, f"segment_{name}", analysis_voxel_size_nm(ctx),
                                    f"segmentation {name}"),)
    return paths + write_tables(result.classes, out, f"segment_{name}")


SEGMENT = Stage(
    name="segment", needs=("enhance", "align"), per_step=True,
    description="pixel classifier trained on labelled steps (T0), every step",
    outputs="models/segment_pixel_classifier.npz, volumes/segment_<step>.ome.zarr, tables/segment_<step>",
    enabled=lambda exp, inp: exp.segment is not None,
    options=lambda exp: {**section_options(exp, "segment"), "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {**{f"segment.labels (step {i})": p for i, p in inp.segment_labels},
                                   **{inp.names[i]: inp.series[i] for i, _ in inp.segment_labels},
                                   inp.names[step]: inp.series[step],
                                   **({f"truth.labels[{step}]": inp.truth_labels[step]} if inp.truth_labels else {})},
    steps=lambda ctx: tuple(range(ctx.inputs.n_steps)),
    run_step=_segment_step, save_step=_segment_save,
    load_step=lambda out, ctx, step: load_labels(out, f"segment_{ctx.inputs.names[step]}"), reads=reads_series)


# -- particles ------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ParticlesResult:
    """Particle labels per step and the tables of the particles stage (columns ``{name: array}``)."""

    labels: tuple[np.ndarray, ...]
    particles: dict
    summary: dict
    tracks: object | None
    voxel_size_nm: tuple[float, float, float]
    stores: tuple = ()  # per step: the SlabStore of a streamed step's labels (published by the save), or None


def _dominant(pred, truth, chunk_budget_mb=None) -> dict[int, int]:
    """``{predicted label: the true label covering most of its voxels}`` (0: mostly background); lazy volumes are
    read slab by slab (:func:`tomo4d.segment.evaluate_chunked.overlap_counts`: the same result)."""
    from ..segment.evaluate_chunked import overlap_counts

    pairs, c, _, _ = overlap_counts(pred, truth, chunk_budget_mb=chunk_budget_mb)
    if not len(pairs):
        return {}
    pl, tl = pairs[:, 0], pairs[:, 1]
    order = np.lexsort((-c, pl))
    _, first = np.unique(pl[order], return_index=True)
    return dict(zip(pl[order][first].tolist(), tl[order][first].tolist()))


def _kept_truth(ctx, path, min_voxels: int):
    """The true particles of ``path`` on the analysis grid, lazily, objects under ``min_voxels`` set to 0 (the others
    keep their values: a particle's id is the same at every step, which the link accuracy compares)."""
    from .._array import read_box
    from .._chunks import plan_slabs

    truth = lazy_labels(ctx, path)
    sizes = np.zeros(1, np.int64)
    for z0, z1 in plan_slabs(truth.shape, bytes_per_voxel=16, chunk_budget_mb=budget_mb(ctx)):
        b = np.bincount(np.asarray(read_box(truth, (slice(z0, z1),))).ravel().astype(np.int64))
        sizes = np.concatenate([sizes, np.zeros(max(0, b.size - sizes.size), np.int64)])
        sizes[:b.size] += b
    keep = sizes >= min_voxels
    keep[0] = True
    return truth.map_blocks(lambda blk: np.where(keep[blk], blk, 0), dtype=truth.dtype)


def _truth_columns(ctx, labels, tracks, min_voxels: int) -> dict:
    """Detection scores per step and the fraction of track links (first step -> step) on one true particle; every
    step's particles (in memory or a store) and truth read slab by slab (the same scores as in memory)."""
    from ..segment.evaluate_chunked import match_particles_chunked

    inp = ctx.inputs
    cols: dict = {k: [] for k in ("n_true", "precision", "recall", "f1", "n_links", "link_accuracy")}
    dom = []
    for i, lab in enumerate(labels):
        truth = _kept_truth(ctx, inp.truth_particles[i], min_voxels * analysis_scale(ctx.experiment) ** 3)
        sc = match_particles_chunked(lab, truth, chunk_budget_mb=budget_mb(ctx))
        for k in ("n_true", "precision", "recall", "f1"):
            cols[k].append(getattr(sc, k))
        dom.append(_dominant(lab, truth, budget_mb(ctx)))
        n = ok = 0
        if tracks is not None and i > 0:
            for t in np.flatnonzero((tracks.label[:, i] > 0) & (tracks.first_step < i)):
                f = int(tracks.first_step[t])
                a, b = dom[f].get(int(tracks.label[t, f]), 0), dom[i].get(int(tracks.label[t, i]), 0)
                n, ok = n + 1, ok + int(a == b != 0)
        cols["n_links"].append(n)
        cols["link_accuracy"].append(ok / n if n else np.nan)
    return {k: np.asarray(v) for k, v in cols.items()}


def _particles_run(ctx):
    from ..quantify import particle_properties, track_particles
    from ..segment import label_particles

    sec, inp, exp = ctx.experiment.particles, ctx.inputs, ctx.experiment
    vs = analysis_voxel_size_nm(ctx)  # the segmentation's grid (enhanced: twice finer)
    labels, rows, summary = [], [], []
    for i in range(inp.n_steps):
        seg = lazy_segment(ctx, i)
        if streams(ctx, seg.shape, PARTICLE_BYTES_PER_VOXEL):  # out of core, slab by slab (split: cluster by cluster)
            store, table = _particles_streamed(ctx, i, seg, vs)
            labels.append(store)
            rows.append({"step": np.asarray([inp.names[i]] * len(table)), **table.to_columns()})
            summary.append({"step": inp.names[i], "time_s": inp.time_s[i], **table.summary()})
            continue
        solid = np.isin(ctx.load("segment", i), sec.particle_classes())  # every class of a particle
        if i == 0 and not solid.any():
            from ..errors import InputError

            raise InputError(f"particles.particle_class={sec.particle_class} is not in the T0 segmentation (its "
                             f"classes: {', '.join(str(int(c)) for c in np.unique(ctx.load('segment', 0)))}); set "
                             "it to the label value(s) of the particle phase")
        parts = label_particles(solid.astype(np.uint8), particle_class=1, voxel_size_nm=vs, split=sec.split,
                                min_volume_nm3=sec.min_voxels * float(np.prod(inp.voxel_size_nm)))  # series voxels
        table = particle_properties(parts.labels, voxel_size_nm=vs)
        labels.append(parts.labels)
        cols = table.to_columns()
        rows.append({"step": np.asarray([inp.names[i]] * len(table)), **cols})
        summary.append({"step": inp.names[i], "time_s": inp.time_s[i], **table.summary()})
    stores = tuple(a if isinstance(a, SlabStore) else None for a in labels)
    fields = [ctx.load("dvc", i) for i in range(1, inp.n_steps)] \
        if sec.use_dvc and exp.dvc is not None and inp.n_steps >= 2 else None
    if fields is not None:  # a field without a usable node predicts nothing: that step is tracked without it
        for i, f in enumerate(fields, 1):
            if not np.any(f.usable):
                log.warning("particles: the DVC field T0 -> %s has no usable node; tracked without it", inp.names[i])
        fields = [f if np.any(f.usable) else None for f in fields]
    tracks = track_particles(labels, displacement=fields, voxel_size_nm=vs, names=inp.names,  # stores: slab by slab
                             search_radius_factor=sec.search_radius_factor,
                             chunk_budget_mb=budget_mb(ctx)) if sec.track else None
    summ = {k: np.asarray([r[k] for r in summary]) for k in summary[0]}
    if tracks is not None:
        summ["n_tracks_found"] = np.asarray([int(np.count_nonzero(tracks.label[:, i])) for i in range(inp.n_steps)])
    if inp.truth_particles:
        summ.update(_truth_columns(ctx, labels, tracks, sec.min_voxels))
    particles = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return ParticlesResult(labels=tuple(labels), particles=particles, summary=summ, tracks=tracks, voxel_size_nm=vs,
                           stores=stores)


def _particles_streamed(ctx, i, seg, vs):
    """Step ``i``'s particles labelled slab by slab (connected components merged across slab faces,
    :func:`tomo4d.quantify.particles_chunked.label_particles_chunked`; with ``particles.split`` the distance
    watershed cluster by cluster, :func:`tomo4d.segment.split_chunked.split_particles_chunked`) into the progress
    store of ``volumes/particles_<step>.ome.zarr`` (published by the save), and their table."""
    import math

    from .._chunks import plan_slabs
    from ..errors import InputError
    from ..quantify.particles_chunked import label_particles_chunked, particle_properties_chunked
    from ..segment.split_chunked import split_particles_chunked

    sec, inp = ctx.experiment.particles, ctx.inputs
    min_vox = int(math.ceil(sec.min_voxels * float(np.prod(inp.voxel_size_nm)) / float(np.prod(vs)) - 1e-9))
    plan = plan_slabs(seg.shape, bytes_per_voxel=PARTICLE_BYTES_PER_VOXEL, chunk_budget_mb=budget_mb(ctx))
    store = SlabStore(ctx.out / "volumes" / f"particles_{inp.names[i]}.ome.zarr", shape=seg.shape, dtype=np.int32,
                      slabs=plan, voxel_size_nm=vs, name=f"particles {inp.names[i]}",
                      key=f"{segment_path(ctx.out, inp.names[i]).stat().st_mtime_ns}:{sec.particle_classes()}:{min_vox}"
                          f":split={sec.split}")
    if sec.split:
        res = split_particles_chunked(seg, particle_class=sec.particle_classes(), voxel_size_nm=vs,
                                      min_voxels=min_vox, out=store, publish=False, chunk_budget_mb=budget_mb(ctx))
        table = particle_properties_chunked(store, voxel_size_nm=vs, chunk_budget_mb=budget_mb(ctx))
    else:
        res = label_particles_chunked(seg, particle_class=sec.particle_classes(), voxel_size_nm=vs,
                                      min_voxels=min_vox, out=store, publish=False)
        table = res.table
    if i == 0 and res.n_particles == 0 and res.n_removed == 0:
        raise InputError(f"particles.particle_class={sec.particle_class} is not in the T0 segmentation; set it to "
                         "the label value(s) of the particle phase")
    return store, table


def _particles_save(result, out):
    paths = ()
    stores = result.stores or (None,) * len(result.labels)
    for name, lab, store in zip(result.summary["step"], result.labels, stores):
        if store is not None:  # streamed: every slab is in the progress store
            paths += (rel(out, store.publish()),)
            continue
        paths += (save_label_volume(lab.astype(np.int32), out, f"particles_{name}", result.voxel_size_nm,
                                    f"particles {name}"),)
    paths += write_tables(result.particles, out, "particles") + write_tables(result.summary, out, "particles_summary")
    if result.tracks is not None:
        paths += write_tables(result.tracks, out, "tracks")
    return paths


def _particles_files(inp, step) -> dict:
    return {f"truth.particles[{i}]": p for i, p in enumerate(inp.truth_particles)}


PARTICLES = Stage(
    name="particles", needs=("segment", "dvc"), per_step=False,  # segment covers the series read
    description="particles per step, geometry, tracks (DVC-predicted when dvc runs)",
    outputs="volumes/particles_<step>.ome.zarr, tables/particles, tables/particles_summary, tables/tracks",
    enabled=lambda exp, inp: exp.particles is not None and exp.segment is not None,
    options=lambda exp: {**section_options(exp, "particles"), "inputs.names": exp.inputs.names,
                         "inputs.time_s": exp.inputs.time_s, "dvc": "present" if exp.dvc is not None else "absent"},
    input_files=_particles_files, run=_particles_run, save=_particles_save,
    reads=lambda exp, need: need != "dvc" or exp.particles.use_dvc)

