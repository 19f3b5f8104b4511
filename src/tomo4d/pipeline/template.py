"""``tomo4d init``: a commented template experiment file from a folder of scans.

The series is the largest group of volume files in the folder (or in one of its sub-folders)
whose names differ only in their numbers, ordered naturally; files whose name holds "label"
become the labels.  What can be inferred (the glob, the number of steps, time and state of
charge when the files' metadata hold them) is filled in; what cannot is written as ``TODO``,
which :func:`~tomo4d.pipeline.load_experiment` refuses by key until it is replaced.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from ..errors import InputError
from .experiment import TODO
from .inputs import natural_key

__all__ = ["VOLUME_SUFFIXES", "experiment_template"]

#: file (or folder) suffixes taken for volumes
VOLUME_SUFFIXES = (".tif", ".tiff", ".h5", ".hdf5", ".nxs", ".zarr", ".vol", ".raw")


def _groups(folder: Path) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = defaultdict(list)
    for d in [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and p.suffix.lower() != ".zarr")]:
        for p in d.iterdir():
            if p.name.startswith(".") or p.suffix.lower() not in VOLUME_SUFFIXES:
                continue
            rel = p.relative_to(folder).as_posix()
            groups[re.sub(r"\d+", "*", rel)].append(p)
    return groups


def _pick(groups: dict[str, list[Path]], *, labels: bool) -> tuple[str, list[Path]] | None:
    cands = [(k, v) for k, v in groups.items() if ("label" in k.lower()) == labels]
    if not cands:
        return None
    k, v = max(cands, key=lambda kv: (len(kv[1]), -len(kv[0])))
    return k, sorted(v, key=natural_key)


def _meta_list(vols, attr: str):
    vals = [getattr(v.metadata, attr) for v in vols]
    return None if any(x is None for x in vals) else vals


def experiment_template(scans, *, relative_to=None) -> str:
    """The text of a commented experiment file for the scans in the folder ``scans``.

    Parameters
    ----------
    scans : path-like
        Folder holding one volume file per time step (and optionally label volumes).
    relative_to : path-like, optional
        Folder of the experiment file to be written; paths are written relative to it
        (default: absolute paths).
    """
    from ..io import open_volume

    folder = Path(scans)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise InputError(f"scans folder {str(folder)!r} {what}; give the folder holding one volume per time step")
    groups = _groups(folder)
    series = _pick(groups, labels=False)
    if series is None:
        raise InputError(f"scans folder {str(folder)!r} holds no volume files ({', '.join(VOLUME_SUFFIXES)}); "
                         "give the folder of the in-situ scans")
    labels = _pick(groups, labels=True)
    repeat = sorted((p for g in groups.values() for p in g if "repeat" in p.name.lower()), key=natural_key)
    vols = [open_volume(p) for p in series[1]]
    base = Path(relative_to).resolve() if relative_to is not None else None

    def where(pattern: str) -> str:
        p = folder.resolve() / pattern
        return Path(os.path.relpath(p, base)).as_posix() if base is not None else p.as_posix()

    n, v0 = len(vols), vols[0]
    times, socs = _meta_list(vols, "time_s"), _meta_list(vols, "state_of_charge")
    vs = ", ".join(f"{x:g}" for x in v0.voxel_size_nm)
    lines = [
        "# tomo4d experiment file (written by tomo4d init; check every value, then: tomo4d run THIS --check)",
        f"name: {folder.resolve().name}",
        "inputs:",
        f"  # {n} steps found (natural order): {', '.join(p.name for p in series[1][:4])}{' ...' if n > 4 else ''}",
        f"  # shape {v0.shape}, dtype {v0.dtype}, voxel size ({vs}) nm"
        + ("" if v0.voxel_size_known else " (NOT in the files: set voxel_size_nm)"),
        f"  series: {where(series[0])}",
        f"  time_s: {times if times is not None else [TODO] * n}   # time of each step since the start, s",
        f"  state_of_charge: {socs if socs is not None else 'null'}   # one value 0..1 per step (null: unknown)",
        f"  voxel_size_nm: {'null' if v0.voxel_size_known else TODO}   # null: from the files",
        (f"  repeat: {where(repeat[0].relative_to(folder).as_posix()) if repeat else 'null'}"
        "   # repeated T0 scan, no change in between: noise floor of the residual maps"),
    ]
    if labels is not None:
        lines.append(f"  labels: {where(labels[0])}   # phase labels, one per step (or one file for T0)")
    else:
        lines.append("  labels: null   # phase label volumes (list or glob) to enable the quantify stage")
    lines += [
        "",
        "# Stages run when their section is present; every option and its default: tomo4d run --schema",
        "# align:                   # rigid alignment of every step onto T0 on the current collector",
        "#   collector_z: null      # [start, stop) px of the collector in T0 (null: the brightest slab)",
        *(["quantify:", "  thickness: true", "  phases: true"] if labels is not None else
          ["# quantify:          # needs inputs.labels or the segment section", "#   thickness: true"]),
        "dvc:",
        f"  node_spacing: {max(2, min(v0.shape) // 8)}   # px between nodes",
        "  half_window: null   # px (null: node_spacing)",
        "  grey_model: ssd     # znssd when the grey levels change between the steps (zssd, nssd: brightness, contrast only)",
        "  smooth_sigma_px: 1.0",
        "#   mask: electrode        # correlate the T0 electrode only (needs quantify)",
        "#   # 30-60 % expansion while the grey levels change (lithiation; benchmarks/RESULTS.md, issue 15), as the demo:",
        "#   method: global         # one regularised field with brightness/contrast fields (node_spacing: 4)",
        "#   axial_start: true      # a non-uniform stretch along z fitted first (axial_lateral: true: in-plane too)",
        "#   incremental: true      # T(n-1) -> Tn composed onto T0 -> T(n-1)",
        "#   mask: above_collector  # the rigid collector left out (needs quantify)",
        "#   interfaces: true       # tied to quantify's interfaces (blurred scans)",
        "# segment:                 # pixel classifier trained on labelled voxels, applied to every step",
        "#   labels: T0_labels.tif  # 0 = unlabelled; or fully labelled slices of it: slices: [..], slice_axis: 0",
        "#   # labels: [T0_labels.tif, T5_labels.tif] with label_steps: [0, 5]: the most lithiated step (lithiated Si)",
        "# particles:               # particles per step and tracks with the DVC fields (needs segment)",
        "#   particle_class: [2, 3] # label values of a particle (silicon + lithiated silicon)",
        "residual: {}               # residual maps T0 -> Tn (noise floor from inputs.repeat)" if repeat else
        "# residual: {}             # residual maps T0 -> Tn (set inputs.repeat for the noise floor)",
        "# lithiation: {}           # mode per particle (core-shell / network), particle-centred frames "
        "(needs particles, residual)",
        "# enhance:                 # InDI: needs inputs.training_pair: {lq: LQ scan, hq: HQ scan of the same region}",
        "#   preset: small",
        "# neutron:                 # needs inputs.neutron: neutron attenuation volumes (1/cm), one per step",
        "#   li_free_mu_per_cm: {1: 0.35, 2: 0.12}   # Li-free attenuation of each X-ray phase label, 1/cm",
        "#   layer_phases: [1, 2]   # the label values of the Li-bearing layer",
        "",
    ]
    text = "\n".join(lines)
    return text.replace("'TODO'", TODO)
