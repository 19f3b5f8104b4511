"""Synthetic in-situ experiments: :func:`make_experiment`, :class:`SyntheticExperiment`, :class:`GroundTruth`.

Frames and grids
----------------
All positions are nm in the *sample frame* (axes ``(z, y, x)``, z = electrode thickness = rotation
axis, z grows from the current collector towards the separator).  Its origin is the outer corner of
the low-quality (LQ) field of view.  Two voxel grids are used, both of ``shape`` voxels:

``"lq"``  voxel ``lq_voxel_nm`` (default 100 nm); voxel ``i`` is centred at ``(i + 0.5) * 100`` nm.
``"hq"``  voxel ``hq_voxel_nm`` (default 50 nm), half the field of view per axis (1/8 of the volume),
          centred in the LQ field: voxel ``j`` is centred at ``hq_offset_nm + (j + 0.5) * 50`` nm.

The in-situ series (``series``, ``series_hq``), the repeated scan and the HQ training scan are
aligned with the sample frame; only the LQ training scan ``lq`` is misaligned, by the small affine
transform described by ``lq_to_hq_phi`` and, with ``pair_drift_nm`` > 0, by a smooth local
misregistration on top (:meth:`SyntheticExperiment.lq_drift_nm`) that no affine registration
removes, as between two real scans of one sample.  The ground truth (labels, displacements, strains) refers
to the sample of the series.

Rendering: labels (:meth:`GroundTruth.labels`) are the phase at each voxel *centre* (point
sampling).  Images are partial-volume: before the PSF blur each voxel holds the grey value of the
material averaged over the voxel (as a detector integrates), estimated with ``supersampling**3``
(default 27) midpoint sub-samples in every voxel whose 3x3x3 neighbourhood of labels is not
uniform; the other voxels lie inside one phase and take its grey value.  Sub-sample positions are
mapped to the reference configuration with the local Jacobian of the deformation, particle
surfaces are linearised about the voxel centre (error < 0.05 voxel for the smallest particles).
Without it the 2-voxel pore texture aliases differently in every deformed step, which limits DVC
on ``series_hq`` to ~0.06 px.  The voxel box adds ``voxel**2 / 12`` to the PSF variance (+0.5 % in
sigma for the defaults); ``*_blur_sigma_nm`` and ``*_edge_resolution_nm`` describe the PSF alone.
Neutron volumes are averages of 4^3 point-sampled LQ labels (``neutron_bin``), as before.

Memory: images are dask arrays rendered one whole volume per task (so values never depend on the
chunking) and cached for the last few volumes only; a whole series is never held in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from pathlib import Path

import numpy as np

from .._validate import check_int, show
from ..errors import FormatError, InputError
from ..io import atomic_output, open_volume, save_volume
from ..volume import Volume, VolumeMetadata
from ._deform import deform_forward
from ._engine import _Engine
from ._model import LithiationMode, Phase

# the public names below are re-exported: they were defined here before the module was split
from .params import (  # noqa: F401
    AVOGADRO,
    BYTES_PER_VOXEL,
    DEFAULT_GREY,
    EDGE_10_90_PER_SIGMA,
    NATURAL_LI6_FRACTION,
    NEUTRON_MU_BACKGROUND,
    SIGMA_LI6_B,
    SIGMA_LI6_SCATTER_B,
    SIGMA_LI7_B,
    SIGMA_LI7_SCATTER_B,
    THERMAL_WAVELENGTH_A,
    GridSpec,
    PhantomParams,
    _check_memory,
    _validate,
    default_soc_schedule,
    estimate_memory_bytes,
)
from .truth import GroundTruth, _build_truth  # noqa: F401  (GroundTruth re-exported)

FORMAT_VERSION = 1


def _lazy_volume(engine, fn, key, shape, voxel, meta, chunks):
    import dask
    import dask.array as da

    name = f"tomo4d-phantom-{key}-{dask.base.tokenize(engine.params.to_dict())}"
    arr = da.from_delayed(dask.delayed(fn, pure=True, name=name)(), shape=shape, dtype=np.float32, name=name)
    if chunks is not None:
        arr = arr.rechunk(chunks)
    return Volume(arr, (voxel,) * 3, meta)


class SyntheticExperiment:
    """A synthetic in-situ nano-tomography experiment with its ground truth.

    Built by :func:`make_experiment` (or :meth:`load`).  Image volumes are lazy (dask) and rendered
    one whole volume at a time on first use.

    Attributes
    ----------
    params : PhantomParams
        The validated parameters (reproduce the experiment exactly with ``make_experiment(**...)``).
    hq : Volume
        High-quality training scan at T0: ``hq_voxel_nm`` voxels over the HQ field, mild blur and noise.
    lq : Volume
        Low-quality training scan at T0: ``lq_voxel_nm`` voxels over the 2x larger (8x volume) LQ
        field, stronger blur, more noise, ring artefacts around the rotation axis z; misaligned with
        respect to ``hq`` by :attr:`lq_to_hq_phi`.
    lq_to_hq_phi : ndarray, shape (4, 4)
        Registration of the training pair in the project convention ``register(fixed, moving)``:
        fixed = ``hq`` (HQ voxel coordinates), moving = the LQ scan resampled to the HQ voxel size
        over the nominal HQ field, i.e. :meth:`lq_on_hq_grid` (moving voxel ``m`` is LQ continuous
        index ``(m + hq_offset_vox + 0.5) * hq/lq - 0.5``; for the defaults the x2 cell-centred
        upsampling of ``lq`` cropped from index ``shape // 2``).  ``phi[:3, :3] = F``,
        ``phi[:3, 3] = t``, and ``x_moving = F (x - c) + c + t`` with ``c = (shape - 1) / 2``:
        sampling the moving volume at ``phi(x)`` reproduces ``hq`` at ``x``.  Map points with
        :func:`tomo4d.register.apply_phi_to_points` (``centre=c``), volumes with :func:`tomo4d.register.apply_phi`.
    series : tuple of Volume
        In-situ LQ scans T0..Tn of the series sample, aligned with the sample frame (metadata
        ``time_step``, ``time_s``, ``state_of_charge``).
    series_hq : tuple of Volume
        The same steps at HQ quality over the HQ field (independent noise).
    repeat, repeat_hq : Volume
        Second scans of T0 with no change in between (LQ / HQ): the noise floor.
    neutron_series : tuple of Volume
        Neutron attenuation (1/cm) per step over the LQ field, ``neutron_bin`` x coarser voxels.
    truth : GroundTruth
    """

    def __init__(self, params: PhantomParams, *, _engine=None, _volumes=None):
        self.params = params
        self._engine = engine = _engine or _Engine(params)
        self.truth = _build_truth(engine)
        self.lq_to_hq_phi = self.truth.lq_to_hq_phi
        p = params
        n = p.shape
        names = self.truth.step_names
        if _volumes is not None:
            for k, v in _volumes.items():
                setattr(self, k, v)
            return

        def meta(name, step=None, modality="xray"):
            kw = {}
            if step is not None:
                kw = dict(time_step=names[step], time_s=self.truth.time_s[step],
                          state_of_charge=self.truth.state_of_charge[step])
            return VolumeMetadata(name=name, modality=modality, provenance=(f"tomo4d.phantom seed={p.seed}",),
                                  extra={"synthetic": True}, **kw)

        ch = p.chunks
        self.hq = _lazy_volume(engine, lambda: engine.image("hq"), "hq", n, p.hq_voxel_nm, meta("HQ T0", 0), ch)
        self.lq = _lazy_volume(engine, lambda: engine.image("lq"), "lq", n, p.lq_voxel_nm, meta("LQ T0", 0), ch)
        self.repeat = _lazy_volume(engine, lambda: engine.image("repeat"), "repeat", n, p.lq_voxel_nm,
                                   meta("LQ T0 repeat", 0), ch)
        self.repeat_hq = _lazy_volume(engine, lambda: engine.image("repeat_hq"), "repeat_hq", n, p.hq_voxel_nm,
                                      meta("HQ T0 repeat", 0), ch)
        self.series = tuple(
            _lazy_volume(engine, (lambda s=s: engine.image("series", s)), f"series{s}", n, p.lq_voxel_nm,
                         meta(f"LQ {names[s]}", s), ch) for s in range(p.n_steps))
        self.series_hq = tuple(
            _lazy_volume(engine, (lambda s=s: engine.image("series_hq", s)), f"serieshq{s}", n, p.hq_voxel_nm,
                         meta(f"HQ {names[s]}", s), ch) for s in range(p.n_steps))
        nb = tuple(s // p.neutron_bin for s in n)
        self.neutron_series = tuple(
            _lazy_volume(engine, (lambda s=s: engine.neutron(s)), f"neutron{s}", nb, p.neutron_bin * p.lq_voxel_nm,
                         meta(f"neutron {names[s]}", s, "neutron"), ch) for s in range(p.n_steps))

    def __repr__(self) -> str:
        p = self.params
        return (f"<SyntheticExperiment shape={p.shape} steps={p.n_steps} seed={p.seed} "
                f"particles={len(self.truth.particle_id)} hq={p.hq_voxel_nm:g} nm lq={p.lq_voxel_nm:g} nm>")

    @property
    def n_steps(self) -> int:
        return self.params.n_steps

    def lq_drift_nm(self, points_nm) -> np.ndarray:
        """Local misregistration of the LQ training scan (``pair_drift_nm``), nm, after its affine part.

        The LQ scan sees at LQ-scan position ``p`` the sample at ``A p + d(A p)``, with ``A`` the
        affine :attr:`GroundTruth.lq_misalignment` and ``d`` this smooth field (zero by default),
        which no affine registration removes.  ``points_nm``: array of shape ``(..., 3)``, (z, y, x) nm
        in the sample frame (positions after ``A``); returns the same shape.
        """
        pts = np.asarray(points_nm, dtype=np.float64)
        if pts.ndim < 1 or pts.shape[-1] != 3:
            raise InputError(f"points_nm has shape {pts.shape}; give positions of shape (..., 3) in nm")
        return self._engine.drift(pts)

    def lq_on_hq_grid(self, lq=None, *, order: int = 1) -> np.ndarray:
        """Resample an LQ-grid volume (default :attr:`lq`) onto the HQ voxel grid over the nominal HQ field.

        This is the *moving* volume of :attr:`lq_to_hq_phi` (interpolation ``order`` 0-3 of
        :func:`scipy.ndimage.map_coordinates`, cell-centred: HQ-grid voxel ``m`` samples LQ continuous
        index ``(hq_offset_nm + (m + 0.5) * hq_voxel_nm) / lq_voxel_nm - 0.5``).
        """
        from scipy.ndimage import map_coordinates

        vol = self.lq if lq is None else lq
        arr = vol.numpy() if isinstance(vol, Volume) else np.asarray(vol)
        lay = self._engine.layout
        coords = []
        for a in range(3):
            m = np.arange(self.params.shape[a])
            coords.append((lay.hq_offset_nm[a] + (m + 0.5) * lay.hq_voxel_nm) / lay.lq_voxel_nm - 0.5)
        grid = np.meshgrid(*coords, indexing="ij")
        return map_coordinates(arr.astype(np.float32), grid, order=order, mode="nearest").astype(np.float32)

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path, *, overwrite: bool = False, fields: str = "coarse", progress=None) -> Path:
        """Write the experiment to a self-describing folder, one volume at a time (bounded memory).

        Layout: ``experiment.json`` (parameters + ground-truth numbers + file index), ``hq.tif``,
        ``lq.tif``, ``repeat.tif``, ``repeat_hq.tif``, ``series/T*.tif``, ``series_hq/T*.tif``,
        ``neutron/T*.tif``, ``truth/labels_{hq,lq}_T*.tif`` (uint8 :class:`Phase`),
        ``truth/particles_{hq,lq}_T*.tif`` (int32 ids), ``truth/particles.csv`` (per particle: mode, radius,
        lithiated fraction per step) and ``truth/displacement_T*.npz`` (u in nm on the LQ grid,
        every 4th voxel for ``fields="coarse"``, every voxel for ``"full"``, none for ``"none"``).

        Parameters
        ----------
        path : path-like
            Output folder (written under a temporary name, renamed when complete).
        overwrite : bool
            Replace an existing folder.
        fields : {"coarse", "full", "none"}
        progress : callable(done, total), optional
        """
        if fields not in ("coarse", "full", "none"):
            raise InputError(f"fields={show(fields)} is not supported; use 'coarse', 'full' or 'none'")
        out = Path(path)
        truth = self.truth
        n = self.n_steps
        jobs = [("hq.tif", lambda: self.hq), ("lq.tif", lambda: self.lq), ("repeat.tif", lambda: self.repeat),
                ("repeat_hq.tif", lambda: self.repeat_hq)]
        per_step = [[(f"series/{name}.tif", lambda s=s: self.series[s]),
                     (f"series_hq/{name}.tif", lambda s=s: self.series_hq[s]),
                     (f"neutron/{name}.tif", lambda s=s: self.neutron_series[s])]
                    for s, name in enumerate(truth.step_names)]
        total = len(jobs) + 6 * n + 1
        done = 0
        with atomic_output(out, overwrite=overwrite) as tmp:
            tmp.mkdir(parents=True)
            for rel, get in jobs:
                save_volume(get().compute(), tmp / rel)
                done += 1
                if progress:
                    progress(done, total)
            for s, name in enumerate(truth.step_names):
                # everything of one step together: its labels are rendered once (cache)
                for rel, get in per_step[s]:
                    save_volume(get().compute(), tmp / rel)
                    done += 1
                    if progress:
                        progress(done, total)
                meta = VolumeMetadata(name=f"phase labels {name}", time_step=name, modality="label",
                                      state_of_charge=truth.state_of_charge[s],
                                      extra={"phases": {ph.name: int(ph) for ph in Phase}})
                for g in ("hq", "lq"):
                    save_volume(Volume(truth.labels(s, grid=g), (self._engine.layout.voxel_nm(g),) * 3, meta),
                                tmp / "truth" / f"labels_{g}_{name}.tif")
                for g in ("hq", "lq"):
                    save_volume(Volume(truth.particle_labels(s, grid=g), (self._engine.layout.voxel_nm(g),) * 3,
                                       dataclasses.replace(meta, name=f"particle labels {name}")),
                                tmp / "truth" / f"particles_{g}_{name}.tif")
                done += 2
                if fields != "none":
                    stride = 4 if fields == "coarse" else 1
                    g = truth.lq_grid
                    pos = g.positions_nm()[::stride, ::stride, ::stride]
                    u = deform_forward(self._engine.model, s, pos) - pos
                    np.savez_compressed(tmp / "truth" / f"displacement_{name}.npz",
                                        positions_nm=pos.astype(np.float32), displacement_nm=u.astype(np.float32))
                done += 1
                if progress:
                    progress(done, total)
            self._write_particles_csv(tmp / "truth" / "particles.csv")
            doc = {"tomo4d_phantom": FORMAT_VERSION, "params": self.params.to_dict(),
                   "truth": truth.summary(),
                   "non_lithiated_si_volume_nm3": list(truth.non_lithiated_si_volume_nm3),
                   "lithiated_si_volume_nm3": list(truth.lithiated_si_volume_nm3),
                   "fingerprint": _fingerprint(self._engine),
                   "files": {"hq": "hq.tif", "lq": "lq.tif", "repeat": "repeat.tif", "repeat_hq": "repeat_hq.tif",
                             "series": [f"series/{s}.tif" for s in truth.step_names],
                             "series_hq": [f"series_hq/{s}.tif" for s in truth.step_names],
                             "neutron_series": [f"neutron/{s}.tif" for s in truth.step_names]}}
            (tmp / "experiment.json").write_text(json.dumps(doc, indent=1))
            done += 1
            if progress:
                progress(done, total)
        return out

    def _write_particles_csv(self, path: Path) -> None:
        t = self.truth
        head = ["id", "mode", "cracked", "radius_nm", "centre_z_nm", "centre_y_nm", "centre_x_nm"]
        head += [f"lithiated_fraction_{s}" for s in t.step_names]
        lines = [",".join(head)]
        for i in range(len(t.particle_id)):
            row = [str(int(t.particle_id[i])), LithiationMode(int(t.particle_mode[i])).name.lower(),
                   str(int(t.particle_cracked[i])), f"{t.particle_radius_nm[i]:.2f}"]
            row += [f"{v:.2f}" for v in t.particle_centre_nm[i]]
            row += [f"{v:.5f}" for v in t.lithiated_fraction[:, i]]
            lines.append(",".join(row))
        path.write_text("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path) -> SyntheticExperiment:
        """Open a folder written by :meth:`save`: volumes are read lazily, the ground truth is rebuilt
        from the stored parameters (checked against the stored fingerprint)."""
        p = Path(path)
        doc_path = p / "experiment.json"
        if not doc_path.is_file():
            raise InputError(f"{str(p)!r} is not a saved synthetic experiment (no experiment.json); check the path")
        fix = "regenerate it with 'tomo4d phantom' (make_experiment(...).save)"
        try:
            doc = json.loads(doc_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{str(doc_path)!r} is not valid JSON ({exc}); {fix}") from None
        if not isinstance(doc, dict):
            raise FormatError(f"{str(doc_path)!r} holds a JSON {type(doc).__name__}, not an experiment object; {fix}")
        if doc.get("tomo4d_phantom") != FORMAT_VERSION:
            raise FormatError(f"{str(doc_path)!r} has format version {show(doc.get('tomo4d_phantom'))}; "
                              f"this tomo4d reads version {FORMAT_VERSION}: {fix}")
        kw, files = doc.get("params"), doc.get("files")
        known = {f.name for f in dataclasses.fields(PhantomParams)}
        if not isinstance(kw, dict) or not isinstance(files, dict) or set(kw) - known:
            raise FormatError(f"{str(doc_path)!r} lacks or garbles its params/files (unknown: "
                              f"{sorted(set(kw) - known) if isinstance(kw, dict) else 'params'}); {fix}")
        kw = dict(kw)
        for key in ("shape", "soc_schedule"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        try:
            params = _validate(PhantomParams(**kw))
        except InputError as exc:
            raise FormatError(f"{str(doc_path)!r}: {exc}; {fix}") from None
        engine = _Engine(params)
        if _fingerprint(engine) != doc.get("fingerprint"):
            raise InputError(f"{str(p)!r} was written by a tomo4d whose phantom differs from this one; "
                             "its ground truth cannot be rebuilt — regenerate it with make_experiment")
        f = files
        try:
            vols = {k: open_volume(p / f[k]) for k in ("hq", "lq", "repeat", "repeat_hq")}
            for k in ("series", "series_hq", "neutron_series"):
                vols[k] = tuple(open_volume(p / r) for r in f[k])
        except (KeyError, TypeError) as exc:
            raise FormatError(f"{str(doc_path)!r} lacks or garbles the file index entry {exc}; {fix}") from None
        return cls(params, _engine=engine, _volumes=vols)


def _fingerprint(engine) -> str:
    parts = engine.model.particles
    h = hashlib.sha256()
    drift = (engine.drift.amp, engine.drift.wave) if engine.params.pair_drift_nm else ()
    for a in (parts.centre_nm, parts.radius_nm, parts.mode, engine.model.fields.pore[:4], engine.misalign,
              engine.neutron_mu_table()[0]) + drift:
        h.update(np.ascontiguousarray(np.round(a, 6)).tobytes())
    return h.hexdigest()[:16]


def make_experiment(*, shape=(64, 64, 64), n_steps: int = 7, seed: int = 0, **options) -> SyntheticExperiment:
    """Generate a synthetic in-situ nano-tomography experiment of a silicon anode with ground truth.

    Parameters
    ----------
    shape : (int, int, int)
        Voxels (z, y, x) of the HQ *and* of the LQ grids (each >= 24).  The LQ field is
        ``lq_voxel_nm / hq_voxel_nm`` (2) times larger per axis.
    n_steps : int
        Number of time steps T0..T(n-1), including the pristine T0.
    seed : int
        Seed of every random choice: the same seed gives the same bytes.
    **options
        Any field of :class:`PhantomParams`:

        - geometry: ``hq_voxel_nm`` (50), ``lq_voxel_nm`` (100), ``anode_thickness_nm`` (0.45 x the HQ
          z extent), ``particle_radius_nm`` (median, anode/5), ``radius_sigma`` (0.35, log-normal),
          ``si_volume_fraction`` (0.35), ``cracked_fraction`` (0.2), ``crack_width_nm`` (60),
          ``matrix_porosity`` (0.3), ``pore_size_nm`` (100), ``separator_solid_fraction`` (0.45),
          ``fibre_radius_nm`` (80).
        - lithiation: ``soc_schedule`` (one SoC per step, first 0; default ramps to 0.85 then
          delithiates to 0.5), ``core_shell_fraction`` (0.1, the rest lithiate along internal planes).
        - mechanics: ``expansion`` (0.52: mean axial anode strain per unit SoC), ``expansion_gradient``
          (0.19: strain is (1 -/+ g) x mean on the collector/separator side), ``in_plane_ratio`` (0.05:
          in-plane/axial strain), ``residual_fraction`` (0.6: share of the peak swelling kept after
          delithiation), ``particle_swelling`` (0.35 x the free Si swelling, local to each particle).
        - imaging: ``hq_blur_sigma_nm`` (140 -> 10-90 % edge 357 nm), ``lq_blur_sigma_nm`` (313 ->
          803 nm), ``hq_noise`` (0.02), ``lq_noise`` (0.06), ``ring_amplitude`` (0.03),
          ``phase_contrast`` (0: fringe strength), ``lithiated_contrast_loss`` (0.8: lithiated Si grey
          moves this share of the way to the matrix grey), ``misalignment_deg`` (0.8),
          ``misalignment_shift_nm`` (60), ``pair_drift_nm`` (0: RMS local misregistration of the
          LQ training scan left after the affine part, a smooth random field of wavelength
          ``pair_drift_length_nm``, 3000), ``series_sample`` ("same" or "twin": the series images a
          second sample with the same statistics), ``step_interval_s`` (3600).
        - neutron: ``neutron_bin`` (4: neutron voxel = 4 LQ voxels), ``neutron_blur_sigma_nm`` (500),
          ``neutron_noise`` (0.05 1/cm), ``li6_fraction`` (0.0759, natural lithium).
        - ``supersampling`` (3): sub-samples per axis of a voxel at an interface, for the
          partial-volume (voxel-averaged) grey values of the images; 1 = point sampling (faster,
          aliased); labels are always point sampled at the voxel centres.
        - ``chunks``: dask chunks of the lazy volumes (values do not depend on it).

    Returns
    -------
    SyntheticExperiment

    Raises
    ------
    InputError
        A parameter out of range (the message names it and the accepted range).

    Examples
    --------
    >>> exp = make_experiment(shape=(64, 64, 64), n_steps=4, seed=1)   # doctest: +SKIP
    >>> exp.series[3].numpy().shape, exp.truth.thickness_nm[3]          # doctest: +SKIP
    """
    known = {f.name for f in dataclasses.fields(PhantomParams)} - {"shape", "n_steps", "seed"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) {unknown} of make_experiment; known: {', '.join(sorted(known))}")
    seed = check_int("seed", seed, minimum=0)
    soc = options.get("soc_schedule")
    if soc is not None and not isinstance(soc, (str, numbers.Number)) and np.ndim(soc) == 1:
        options["soc_schedule"] = tuple(soc)
    params = _validate(PhantomParams(shape=shape, n_steps=n_steps, seed=seed, **options))
    _check_memory(params.shape)
    return SyntheticExperiment(params)
