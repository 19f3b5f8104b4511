"""The ``quantify`` stage: electrode thickness and phase volumes of the label series (the label files, else the
``segment`` stage's labels; see :mod:`.stages` for the workflow)."""

from __future__ import annotations

from .series import analysis_scale, analysis_voxel_size_nm
from .stage import Stage, section_options
from .stage_io import read_table_of, write_tables

__all__ = ["QUANTIFY"]


def _quantify_run(ctx):
    from ..quantify import phase_series, thickness_series
    from .chunked import budget_mb, lazy_labels, lazy_segment

    inp, sec = ctx.inputs, ctx.experiment.quantify
    vs = analysis_voxel_size_nm(ctx)  # label files repeated onto the analysis grid (:mod:`.series`)
    labels = [lazy_labels(ctx, p) for p in inp.labels] if inp.labels else \
        [lazy_segment(ctx, i) for i in range(inp.n_steps)]  # no label files: the segment stage's labels
    labels = [_in_memory_or_lazy(ctx, a) for a in labels]  # over chunk_budget_mb: streamed slab by slab
    names = inp.names[:len(labels)]
    budget = budget_mb(ctx)
    th = thickness_series(labels, voxel_size_nm=vs, smooth_nm=sec.smooth_nm, names=names, chunk_budget_mb=budget) \
        if sec.thickness or ctx.experiment.dvc is not None else None
    ph = phase_series(labels, voxel_size_nm=vs, names=names, chunk_budget_mb=budget) if sec.phases else None
    if inp.truth_labels and not inp.labels:  # measured from the segmentation: the truth beside it
        truth = [_in_memory_or_lazy(ctx, lazy_labels(ctx, p)) for p in inp.truth_labels]
        if th is not None:
            tt = thickness_series(truth, voxel_size_nm=vs, smooth_nm=sec.smooth_nm, names=names,
                                  chunk_budget_mb=budget)
            th = {**th.to_columns(), "true_thickness_mean_um": tt.mean_um, "true_expansion": tt.expansion}
        if ph is not None:
            ph = {**ph.to_columns(),
                  "true_rnl": phase_series(truth, voxel_size_nm=vs, names=names, chunk_budget_mb=budget).rnl}
    return th, ph


def _in_memory_or_lazy(ctx, data):
    """``data`` loaded (numpy) when its working set fits ``chunk_budget_mb``, else left lazy (read slab by slab)."""
    from .._array import to_numpy
    from ..quantify.chunked import BYTES_PER_VOXEL
    from .chunked import streams

    return data if streams(ctx, data.shape, BYTES_PER_VOXEL) else to_numpy(data)


def _quantify_save(result, out):
    th, ph = result
    paths = ()
    if th is not None:
        paths += write_tables(th, out, "thickness")
    if ph is not None:
        paths += write_tables(ph, out, "phases")
    return paths


def _quantify_load(out):
    return read_table_of(out, "thickness")


QUANTIFY = Stage(
    name="quantify", needs=("segment",), per_step=False, description="thickness and phase volumes per step",
    outputs="tables/thickness, tables/phases",
    enabled=lambda exp, inp: exp.quantify is not None and (bool(inp.labels) or exp.segment is not None),
    options=lambda exp: {**section_options(exp, "quantify"), "dvc": "present" if exp.dvc is not None else "absent",
                         "inputs.labels": exp.inputs.labels, "analysis_scale": analysis_scale(exp),
                         "inputs.names": exp.inputs.names},
    input_files=lambda inp, step: {**{f"labels[{i}]": p for i, p in enumerate(inp.labels)},
                                   **({f"truth.labels[{i}]": p for i, p in enumerate(inp.truth_labels)}
                                      if not inp.labels else {})},
    run=_quantify_run, save=_quantify_save, load=_quantify_load,
    reads=lambda exp, need: exp.inputs.labels is None)  # the segment stage's labels only without label files
