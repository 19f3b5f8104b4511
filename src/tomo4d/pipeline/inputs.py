"""The inputs of an experiment, resolved and checked before anything is computed.

:func:`resolve_inputs` expands globs (natural order: ``T2`` before ``T10``), opens every volume
lazily (headers only, no voxels read) and checks what can be checked without computing: every
file exists and opens; shapes, dtypes and voxel sizes agree across the series (the message names
the step that differs); each label volume has its image's shape; the time, state-of-charge and
name lists have one entry per step.  Voxel values (non-finite voxels, label values) are checked by
the stage that reads them.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from .._validate import show
from ..errors import InputError

__all__ = ["ResolvedInputs", "expand_files", "natural_key", "resolve_inputs"]


@dataclass(frozen=True)
class ResolvedInputs:
    """The checked inputs of an experiment.

    Attributes
    ----------
    series : tuple of Path
        Volume files T0..Tn.
    labels : tuple of Path
        Phase label files: one per step, one (T0 only), or none.
    names : tuple of str
        Step names.
    time_s : tuple of float
    state_of_charge : tuple of float or None
    shape : (3,) int
        Voxels (z, y, x) of every step.
    dtype : str
    voxel_size_nm : (3,) float
        From the files, or the experiment's override.
    segment_labels : tuple of (int, Path)
        Training labels of the segment stage: (step, label file) pairs, each on its step's voxel grid.
    repeat : Path or None
        Repeated T0 scan (noise floor of the residual maps).
    truth_labels, truth_particles : tuple of Path
        Ground-truth phase and particle labels, one per step (or none).
    training_pair : (Path, Path) or None
        LQ and HQ scans of the enhance stages (:mod:`.inputs_enhance`).
    truth_hq : tuple of Path
        HQ scans of the in-situ steps (``enhance.truth_hq``), one per step (or none).
    truth_particles_hq : tuple of Path
        True particle labels on those HQ grids (``enhance.truth_particles``), one per step (or none).
    truth_displacement : tuple of Path
        True displacement T0 -> Tn (``truth.displacement``, :mod:`.truth_fields`), one per step (or none).
    neutron : tuple of Path
        Neutron attenuation volumes (1/cm), one per step (or none; :mod:`.inputs_neutron`).
    neutron_voxel_size_nm, neutron_shape : (3,) or None
        Their voxel size (nm) and shape.
    neutron_spectra : tuple of Path
        Transmission spectra, one per step (or none; :mod:`.inputs_neutron_spectra`).
    projections : tuple of Path
        NXtomo projection files of the reconstruct stage (or none; :mod:`.stages_reconstruct`).
    series_reconstructed : bool
        The series are the reconstruct stage's outputs (``reconstruct.as_series``): run-folder files, not inputs.
    """

    series: tuple[Path, ...]
    labels: tuple[Path, ...]
    names: tuple[str, ...]
    time_s: tuple[float, ...]
    state_of_charge: tuple[float, ...] | None
    shape: tuple[int, int, int]
    dtype: str
    voxel_size_nm: tuple[float, float, float]
    segment_labels: tuple[tuple[int, Path], ...] = ()
    repeat: Path | None = None
    truth_labels: tuple[Path, ...] = ()
    truth_particles: tuple[Path, ...] = ()
    training_pair: tuple[Path, Path] | None = None
    truth_hq: tuple[Path, ...] = ()
    truth_particles_hq: tuple[Path, ...] = ()
    truth_displacement: tuple[Path, ...] = ()
    neutron: tuple[Path, ...] = ()
    neutron_voxel_size_nm: tuple[float, float, float] | None = None
    neutron_shape: tuple[int, int, int] | None = None
    neutron_spectra: tuple[Path, ...] = ()
    projections: tuple[Path, ...] = ()
    series_reconstructed: bool = False

    @property
    def n_steps(self) -> int:
        return len(self.series)

    def files(self) -> tuple[Path, ...]:
        """Every input file (series, labels, segment labels, repeat scan, truth); reconstructed series included."""
        extra = tuple(p for _, p in self.segment_labels) + ((self.repeat,) if self.repeat is not None else ())
        extra += tuple(self.training_pair or ()) + self.truth_hq + self.truth_particles_hq + self.neutron + self.neutron_spectra
        extra += self.projections
        return tuple(dict.fromkeys(self.series + self.labels + extra + self.truth_labels + self.truth_particles
                                   + self.truth_displacement))


def natural_key(path) -> list:
    """Sort key ordering numbers by value: ``T2`` before ``T10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def expand_files(exp, value, key: str) -> tuple[Path, ...]:
    """A list of files, or a glob (naturally ordered), relative to the experiment file."""
    if isinstance(value, str):
        pattern = exp.resolve(value)
        found = sorted(glob.glob(str(pattern)), key=natural_key)
        if not found and not glob.has_magic(value):
            return (pattern,)
        if not found:
            raise InputError(f"{key}={show(value)} matches no file (looked for {str(pattern)!r}); check the pattern")
        return tuple(Path(f) for f in found)
    return tuple(exp.resolve(v) for v in value)


def _open(path: Path, key: str, voxel_size_nm):
    from ..io import open_volume

    if not path.exists():
        raise InputError(f"{key}: input {str(path)!r} does not exist; check the path in the experiment file")
    try:
        return open_volume(path, voxel_size_nm=voxel_size_nm)
    except InputError as exc:
        raise type(exc)(f"{key}: {exc}") from None


def _check_lengths(inp, n: int, names) -> None:
    for key, values in (("time_s", inp.time_s), ("state_of_charge", inp.state_of_charge), ("names", inp.names)):
        if values is not None and len(values) != n:
            raise InputError(f"inputs.{key} has {len(values)} entries but inputs.series has {n} steps "
                             f"({', '.join(names)}); give one value per step")


def _series(exp, out):
    """The series' files and their opened volumes (or, reconstructed from projections and not written yet, the
    headers the reconstruct stage will give them)."""
    inp = exp.inputs
    if inp.series is None:  # reconstruct.as_series: the reconstruct stage's outputs in the run folder
        from .stages_reconstruct import reconstructed_series

        series, heads = reconstructed_series(exp, out)
        if all(p.exists() for p in series):
            return series, [_open(p, f"reconstructed series[{i}]", inp.voxel_size_nm) for i, p in enumerate(series)]
        return series, list(heads)
    series = expand_files(exp, inp.series, "inputs.series")
    return series, None


def resolve_inputs(exp, *, out=None) -> ResolvedInputs:
    """Resolve and check the inputs of ``exp`` (an :class:`~tomo4d.pipeline.Experiment`); reads headers only.

    With ``reconstruct.as_series`` the series are the reconstruct stage's volumes in the run folder ``out``; before
    they exist, their headers are those the stage will write (from the projections).

    Raises
    ------
    InputError
        A file is missing or unreadable, a step's shape, dtype or voxel size differs from T0's
        (named), a label volume's shape differs from its image's, or a per-step list has the
        wrong length.
    """
    inp = exp.inputs
    series, vols = _series(exp, out)
    n = len(series)
    if n < 1:
        raise InputError("inputs.series is empty; give one volume file per time step")
    names = tuple(inp.names) if inp.names is not None else tuple(f"T{i}" for i in range(n))
    _check_lengths(inp, n, names)
    if vols is None:
        vols = [_open(p, f"inputs.series[{i}] ({names[i]})", inp.voxel_size_nm) for i, p in enumerate(series)]
    ref = vols[0]
    for i, v in enumerate(vols[1:], 1):
        for what, a, b in (("shape", v.shape, ref.shape), ("dtype", str(v.dtype), str(ref.dtype)),
                           ("voxel size (nm)", v.voxel_size_nm, ref.voxel_size_nm)):
            if a != b:
                raise InputError(f"inputs.series[{i}] ({names[i]}, {str(series[i])!r}) has {what} {show(a)} but "
                                 f"{names[0]} has {show(b)}; every step of the series must share shape, dtype and "
                                 "voxel size (resample or convert that scan, or set inputs.voxel_size_nm)")
    labels = () if inp.labels is None else expand_files(exp, inp.labels, "inputs.labels")
    if len(labels) not in (0, 1, n):
        raise InputError(f"inputs.labels has {len(labels)} files but inputs.series has {n} steps; give one label "
                         "volume per step, or one for T0")
    for i, p in enumerate(labels):
        lab = _open(p, f"inputs.labels[{i}] ({names[i]})", inp.voxel_size_nm)
        if lab.shape != ref.shape:
            raise InputError(f"inputs.labels[{i}] ({names[i]}, {str(p)!r}) has shape {show(lab.shape)} but its image "
                             f"{str(series[i])!r} has {show(ref.shape)}; labels must be on their image's voxel grid")
    seg, repeat = _segment_labels(exp, labels, series, ref), None
    cz = exp.align.collector_z if getattr(exp, "align", None) is not None else None
    if cz is not None and cz[1] > ref.shape[0]:
        raise InputError(f"align.collector_z={list(cz)} reaches past the {ref.shape[0]} z slices of "
                         f"{str(series[0])!r}; give a range [start, stop) inside 0..{ref.shape[0]}")
    if inp.repeat is not None:
        repeat = exp.resolve(inp.repeat)
        _same_grid(_open(repeat, "inputs.repeat", inp.voxel_size_nm), ref, "inputs.repeat", repeat, series[0])
    truth = {}
    for kind in ("labels", "particles"):
        value = getattr(exp.truth, kind) if exp.truth is not None else None
        files = () if value is None else expand_files(exp, value, f"truth.{kind}")
        if len(files) not in (0, n):
            raise InputError(f"truth.{kind} has {len(files)} files but inputs.series has {n} steps; give one per step")
        for i, p in enumerate(files):
            _same_grid(_open(p, f"truth.{kind}[{i}] ({names[i]})", inp.voxel_size_nm), ref,
                       f"truth.{kind}[{i}] ({names[i]})", p, series[i])
        truth[kind] = files
    from .inputs_enhance import resolve_enhance_inputs, resolve_truth_particles_hq
    from .inputs_neutron import resolve_neutron_inputs
    from .inputs_neutron_spectra import resolve_neutron_spectra
    from .stages_reconstruct import resolve_projections

    pair, truth_hq = resolve_enhance_inputs(exp, names, ref)
    neutron, neutron_vs, neutron_shape = resolve_neutron_inputs(exp, names, ref, series)
    return ResolvedInputs(series=series, labels=labels, names=names, time_s=tuple(inp.time_s),
                          state_of_charge=None if inp.state_of_charge is None else tuple(inp.state_of_charge),
                          shape=ref.shape, dtype=str(ref.dtype), voxel_size_nm=tuple(ref.voxel_size_nm),
                          segment_labels=seg, repeat=repeat, truth_labels=truth["labels"],
                          truth_particles=truth["particles"], training_pair=pair, truth_hq=truth_hq,
                          truth_particles_hq=resolve_truth_particles_hq(exp, names, truth_hq),
                          truth_displacement=_truth_displacement(exp, names),
                          neutron=neutron, neutron_voxel_size_nm=neutron_vs, neutron_shape=neutron_shape,
                          neutron_spectra=resolve_neutron_spectra(exp, names), projections=resolve_projections(exp),
                          series_reconstructed=inp.series is None)


def _same_grid(vol, ref, key: str, path: Path, image: Path) -> None:
    if vol.shape != ref.shape:
        raise InputError(f"{key} ({str(path)!r}) has shape {show(vol.shape)} but its image {str(image)!r} has "
                         f"{show(ref.shape)}; it must be on its image's voxel grid")


def _segment_labels(exp, labels, series, ref) -> tuple[tuple[int, Path], ...]:
    """The segment stage's training labels ``((step, path), ...)``, each checked against the series' shape (and
    the slice indices against it)."""
    sec = exp.segment
    if sec is None:
        return ()
    if sec.labels is None:
        files, key = (labels[0],), "inputs.labels"
    else:
        files, key = tuple(exp.resolve(v) for v in ([sec.labels] if isinstance(sec.labels, str) else sec.labels)), \
            "segment.labels"
    steps = list(sec.label_steps) if sec.label_steps is not None else list(range(len(files)))
    if len(steps) != len(files) or len(set(steps)) != len(steps):
        raise InputError(f"segment.label_steps={show(sec.label_steps)} must name one distinct step per file of "
                         f"{key} ({len(files)} files)")
    bad = [s for s in steps if not 0 <= s < len(series)]
    if bad:
        raise InputError(f"segment.label_steps has {bad[0]}, but inputs.series has steps 0..{len(series) - 1}; "
                         "give the index of the step each label file labels")
    for i, (step, path) in enumerate(zip(steps, files)):
        k = f"{key}[{i}]" if len(files) > 1 or key == "inputs.labels" else key
        _same_grid(_open(path, k, exp.inputs.voxel_size_nm), ref, k, path, series[step])
    size = ref.shape[sec.slice_axis]
    bad = [s for s in sec.slices or () if not 0 <= s < size]
    if bad:
        raise InputError(f"segment.slices has {bad[0]}, outside 0..{size - 1} (axis {sec.slice_axis} of "
                         f"{str(files[0])!r}, shape {show(ref.shape)}); give slice indices inside the volume")
    return tuple(zip(steps, files))


def _truth_displacement(exp, names) -> tuple[Path, ...]:
    """``truth.displacement``: one readable .npz per step (:func:`.truth_fields.check_truth_displacement`)."""
    from .truth_fields import check_truth_displacement

    value = exp.truth.displacement if exp.truth is not None else None
    files = () if value is None else expand_files(exp, value, "truth.displacement")
    if len(files) not in (0, len(names)):
        raise InputError(f"truth.displacement has {len(files)} files but inputs.series has {len(names)} steps; "
                         "give one per step (T0's is the zero field)")
    for i, p in enumerate(files):
        check_truth_displacement(p, f"truth.displacement[{i}] ({names[i]})")
    return files
