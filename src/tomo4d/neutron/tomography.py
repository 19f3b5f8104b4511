"""Wavelength-resolved tomography: ToF projections -> per-band attenuation volumes ``(band, z, y, x)``, 1/cm.

Route (:func:`reconstruct_bands`): ToF-resolved projections (counts per angle and ToF bin, an open beam,
optionally a dark; or transmissions) -> contiguous ToF bins summed into wavelength bands
(:func:`band_bins`: equal open-beam counts per band, or given edges) -> flat/dark normalisation, ``-log``
and FBP of each band by the reconstruction engine (:func:`tomo4d.reconstruct.reconstruct`: algotom,
slab by slab; one band's projections in memory at a time) -> attenuation per voxel divided by the voxel
length -> ``mu_per_cm`` with a per-voxel ``sigma_per_cm``.  The result feeds
:func:`~tomo4d.neutron.fit_voxel_maps` (``BandVolumes.spectra()``) or is saved as the band-volume ``.npz``
that ``tomo4d neutron maps`` reads.

Units: the engine returns attenuation per voxel (dimensionless, ``mu * voxel``); ``mu_per_cm = rec /
(pixel_size_nm * 1e-7)``.  Band wavelength: the open-beam-weighted mean of its bins' wavelengths (exact for
terms linear in the wavelength, e.g. 1/v absorption, when ``mu * path`` varies little inside a band).

Per-voxel variance (non-white, transmission-dependent): Poisson counts give each band's sinogram variance
``var(-ln T) = S / (S - D)^2 + (O / r^2) / (O / r - D)^2`` (sample counts ``S``, open-beam counts ``O`` over
``r`` projection exposures, dark ``D`` taken as exact).  FBP is linear; its filter is short, so a voxel's
variance is ``g * mean_over_angles(var at the voxel's detector column)`` with one noise gain ``g`` of the
filter and interpolation, measured once per geometry by reconstructing white noise with the engine
(:func:`fbp_noise_gain`); the back-projection of the variance follows the engine's geometry (algotom:
column ``(x - c0) cos(-a) + (y - c0) sin(-a) + centre`` with ``c0 = (W - 1) / 2``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validate import check_int, check_number, show
from ..errors import FormatError, InputError

__all__ = ["BandOptions", "BandVolumes", "band_bins", "fbp_noise_gain", "fbp_ring_variance", "fbp_variance",
           "reconstruct_bands", "ring_basis"]

_FORMAT = "tomo4d.band_volumes"


@dataclass(frozen=True)
class BandOptions:
    """Options of :func:`reconstruct_bands`.

    Attributes
    ----------
    n_bands : int
        Number of bands with equal open-beam counts (ignored with ``edges_angstrom``).
    edges_angstrom : tuple of float or None
        Band edges (ascending, Å): band ``i`` holds the ToF bins with ``edges[i] <= wavelength < edges[i+1]``.
    open_beam_exposure : float
        Open-beam exposure in units of one projection's (e.g. 10 summed frames: 10); the reference flat is
        ``open_beam / open_beam_exposure``.
    reconstruct : ReconstructOptions or None
        Engine options (filter, rings, centre, slab rows); the centre, when not given, is found once on the
        sum of all bins and used for every band; ``pixel_size_nm`` is set from the call.
    noise_rows : int
        Rows of white noise reconstructed to measure the FBP noise gain (0: no per-voxel sigma).
    """

    n_bands: int = 20
    edges_angstrom: tuple | None = None
    open_beam_exposure: float = 1.0
    reconstruct: object = None
    noise_rows: int = 48

    def __post_init__(self):
        check_int("n_bands", self.n_bands, minimum=1)
        check_number("open_beam_exposure", self.open_beam_exposure, minimum=0, exclusive_minimum=True)
        check_int("noise_rows", self.noise_rows, minimum=0)
        if self.edges_angstrom is not None:
            e = np.asarray(self.edges_angstrom, np.float64)
            if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0) or not np.all(np.isfinite(e)):
                raise InputError(f"edges_angstrom={show(self.edges_angstrom)} must be >= 2 ascending wavelengths (Å)")


@dataclass(frozen=True, eq=False)
class BandVolumes:
    """Per-band attenuation volumes of one wavelength-resolved tomography.

    Attributes
    ----------
    wavelength_angstrom : (n,) array
        Band wavelength: open-beam-weighted mean of its bins, Å.
    bins : (n, 2) int array
        ToF bin range ``[start, stop)`` of each band (indices into the input's bin axis).
    bin_weights : (n_bins,) array
        Weight of each ToF bin within its band (open-beam counts, normalised per band; 0 outside bands).
    mu_per_cm : (n, z, y, x) float32
        Attenuation, 1/cm.
    sigma_per_cm : (n, z, y, x) float32 or None
        Its standard deviation from the counts (None for transmission input).
    voxel_size_nm : float
    center : float
        Rotation axis (detector column) used for every band.
    noise_gain : float or None
        The FBP noise gain (voxel variance per unit sinogram variance).
    n_clipped : int
        Transmissions clipped before ``-log`` over all bands.
    provenance : dict
    """

    wavelength_angstrom: np.ndarray
    bins: np.ndarray
    bin_weights: np.ndarray
    mu_per_cm: np.ndarray
    sigma_per_cm: np.ndarray | None
    voxel_size_nm: float
    center: float
    noise_gain: float | None = None
    n_clipped: int = 0
    provenance: dict = field(default_factory=dict)

    def spectra(self):
        """``(mu (z, y, x, n), sigma (z, y, x, n) or None)``: wavelength LAST, as the map fits want them."""
        sig = None if self.sigma_per_cm is None else np.moveaxis(self.sigma_per_cm, 0, -1)
        return np.moveaxis(self.mu_per_cm, 0, -1), sig

    def average(self, per_bin, *, axis: int = 0) -> np.ndarray:
        """Band averages of per-ToF-bin values (e.g. Li-free attenuation spectra), with the bands' weights."""
        v = np.moveaxis(np.asarray(per_bin, np.float64), axis, 0)
        if v.shape[0] != self.bin_weights.size:
            raise InputError(f"per_bin has {v.shape[0]} values along axis {axis}; give one per ToF bin "
                             f"({self.bin_weights.size})")
        out = np.stack([np.tensordot(self.bin_weights[a:b], v[a:b], axes=(0, 0)) for a, b in self.bins])
        return np.moveaxis(out, 0, axis)

    def save(self, path, *, overwrite: bool = False, inputs=()) -> Path:
        """One ``.npz`` (atomic) readable by ``tomo4d neutron maps``: ``wavelength_angstrom``, ``mu_per_cm``
        (band, z, y, x), ``sigma_per_cm`` when known, and the band bookkeeping."""
        import json

        from ..io import atomic_output

        arrays = {"wavelength_angstrom": self.wavelength_angstrom, "mu_per_cm": self.mu_per_cm, "bins": self.bins,
                  "bin_weights": self.bin_weights, "voxel_size_nm": self.voxel_size_nm, "center": self.center,
                  "n_clipped": self.n_clipped, "noise_gain": np.nan if self.noise_gain is None else self.noise_gain}
        if self.sigma_per_cm is not None:
            arrays["sigma_per_cm"] = self.sigma_per_cm
        p = Path(path)
        with atomic_output(p, overwrite=overwrite, inputs=inputs) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, format=_FORMAT, provenance=json.dumps(self.provenance, default=str), **arrays)
        return p

    @classmethod
    def load(cls, path) -> BandVolumes:
        import json

        try:
            with np.load(Path(path), allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise FormatError(f"cannot read {str(path)!r} as band volumes: {exc}") from None
        if str(d.get("format", "")) != _FORMAT:
            raise FormatError(f"{str(path)!r} is not a band-volume file written by BandVolumes.save")
        gain = float(d["noise_gain"])
        return cls(wavelength_angstrom=d["wavelength_angstrom"], bins=d["bins"], bin_weights=d["bin_weights"],
                   mu_per_cm=d["mu_per_cm"], sigma_per_cm=d.get("sigma_per_cm"),
                   voxel_size_nm=float(d["voxel_size_nm"]), center=float(d["center"]),
                   noise_gain=None if np.isnan(gain) else gain, n_clipped=int(d["n_clipped"]),
                   provenance=json.loads(str(d["provenance"])))


def band_bins(wavelength_angstrom, weights=None, *, n_bands: int = 20, edges_angstrom=None) -> np.ndarray:
    """ToF bin ranges ``(n, 2)`` ``[start, stop)`` of the bands.

    ``edges_angstrom`` given: the bins whose wavelength lies in ``[edges[i], edges[i+1])`` (empty bands are
    refused).  Otherwise ``n_bands`` contiguous bands with (as nearly as whole bins allow) equal sums of
    ``weights`` (the open-beam spectrum: equal counts, so equal statistical weight per band; default equal
    numbers of bins).
    """
    w = np.asarray(wavelength_angstrom, np.float64)
    if w.ndim != 1 or w.size < 1 or not np.all(np.diff(w) > 0):
        raise InputError("wavelength_angstrom must be the ascending wavelengths of the ToF bins (Å)")
    if edges_angstrom is not None:
        e = np.asarray(edges_angstrom, np.float64)
        idx = np.searchsorted(w, e, side="left")
        out = np.stack([idx[:-1], idx[1:]], axis=1)
        empty = [i for i, (a, b) in enumerate(out) if b <= a]
        if empty:
            raise InputError(f"edges_angstrom={show(list(e))}: band(s) {empty} hold no ToF bin (bins span "
                             f"{w[0]:.4g}..{w[-1]:.4g} Å); widen or drop them")
        return out.astype(np.int64)
    n = check_int("n_bands", n_bands, minimum=1, maximum=w.size)
    wt = np.ones_like(w) if weights is None else np.clip(np.asarray(weights, np.float64), 0, None)
    if wt.shape != w.shape or not wt.sum() > 0:
        raise InputError(f"weights must be {w.size} non-negative values with a positive sum (the open-beam spectrum)")
    cum = np.concatenate([[0.0], np.cumsum(wt)]) / wt.sum()
    cuts = np.searchsorted(cum, np.arange(1, n) / n, side="left")
    cuts = np.clip(cuts, 1, w.size - 1)
    for i in range(1, cuts.size):  # whole bins, each band >= 1 bin
        cuts[i] = max(cuts[i], cuts[i - 1] + 1)
    cuts = np.minimum(cuts, w.size - n + 1 + np.arange(cuts.size))
    starts = np.concatenate([[0], cuts])
    return np.stack([starts, np.concatenate([cuts, [w.size]])], axis=1).astype(np.int64)


def fbp_variance(variance_sinogram, center: float, angles_deg, *, gain: float) -> np.ndarray:
    """Per-voxel variance ``(rows, W, W)`` of the engine's FBP of sinograms ``(angle, row, W)`` with independent
    noise of ``variance_sinogram``: ``gain`` times the mean over angles of the variance at each voxel's column
    (the engine's geometry; linear interpolation between columns)."""
    v = np.asarray(variance_sinogram, np.float64)
    n, rows, width = v.shape
    c0 = 0.5 * (width - 1)
    idx = np.arange(width) - c0
    out = np.zeros((rows, width, width))
    for a, ang in enumerate(np.deg2rad(np.asarray(angles_deg, np.float64))):
        th = -ang
        pos = idx[None, :] * np.cos(th) + idx[:, None] * np.sin(th) + center   # (y, x)
        inside = (pos >= 0) & (pos <= width - 1)
        p = np.clip(pos, 0, width - 1)
        lo = np.floor(p).astype(int)
        hi = np.minimum(lo + 1, width - 1)
        f = p - lo
        out += np.where(inside[None], v[a][:, lo] * (1 - f) + v[a][:, hi] * f, 0.0)
    return out * (gain / n)


def fbp_noise_gain(angles_deg, width: int, center: float, *, options=None, rows: int = 48, seed: int = 0) -> float:
    """Voxel variance of the engine's FBP per unit (white) sinogram variance, measured by reconstructing
    ``rows`` rows of unit Gaussian noise (median over the voxels whose rays stay on the detector)."""
    from ..reconstruct import Projections, ReconstructOptions, reconstruct

    n = len(angles_deg)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, rows, width)).astype(np.float32)
    base = options if options is not None else ReconstructOptions()
    opts = dataclasses.replace(base, center=float(center), allow_missing_flats=True, rows=None, paganin=None,
                               rings="none", uint16_range=None, min_transmission=1e-30)
    proj = Projections(np.exp(-noise), None, None, None, np.asarray(angles_deg, np.float64), None, "white noise")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = np.asarray(reconstruct(proj, options=opts).volume.data, np.float64)
    c0 = 0.5 * (width - 1)
    y, x = np.mgrid[:width, :width] - c0
    inner = np.hypot(y, x) < c0 - abs(center - c0) - 1.5
    return float(np.median(np.var(rec, axis=0)[inner]))


def ring_basis(width: int, center: float, angles_deg, *, options=None, chunk: int = 64) -> np.ndarray:
    """``M_c(v)^2`` ``(W, W * W)`` float32: the square of the engine's reconstruction of a sinogram that is 1 in
    column ``c`` at every angle (one slab of ``chunk`` such rows at a time)."""
    import warnings

    from ..reconstruct import Projections, ReconstructOptions, reconstruct

    ang = np.asarray(angles_deg, np.float64)
    base = options if options is not None else ReconstructOptions()
    opts = dataclasses.replace(base, center=float(center), allow_missing_flats=True, rows=None, paganin=None,
                               rings="none", uint16_range=None, min_transmission=1e-30)
    out = np.empty((width, width * width), np.float32)
    for c0 in range(0, width, chunk):
        cols = np.arange(c0, min(c0 + chunk, width))
        sino = np.zeros((ang.size, cols.size, width), np.float32)
        sino[:, np.arange(cols.size), cols] = 1.0
        proj = Projections(np.exp(-sino), None, None, None, ang, None, "ring basis")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = np.asarray(reconstruct(proj, options=opts).volume.data, np.float64).reshape(cols.size, -1)
        out[cols] = m * m
    return out


def fbp_ring_variance(column_variance, center: float, angles_deg, *, options=None, basis=None) -> np.ndarray:
    """Per-voxel variance ``(rows, W, W)`` of the engine's FBP from noise shared by every projection of a column
    (the open beam's: one reference for all angles), ``column_variance`` ``(rows, W)``.

    That noise is the same at every angle, so it back-projects coherently (rings, strongest at the axis): the
    variance is ``sum_c M_c(v)^2 var_c`` with ``M_c`` from :func:`ring_basis` (given, or computed here).
    """
    cv = np.asarray(column_variance, np.float64)
    rows, width = cv.shape
    b = ring_basis(width, center, angles_deg, options=options) if basis is None else basis
    return (cv @ b).reshape(rows, width, width)


#: largest ring basis (bytes) kept for all bands; wider detectors recompute it per band
RING_BASIS_BYTES = 256 * 2**20


def _check_inputs(counts, open_beam, dark, w, angles):
    shape = tuple(int(s) for s in getattr(counts, "shape", ()))
    if len(shape) != 4:
        raise InputError(f"counts has shape {shape}; give ToF projections (angle, bin, row, column)")
    n_ang, n_bins, rows, cols = shape
    if w.shape != (n_bins,):
        raise InputError(f"wavelength_angstrom has {w.size} values but the projections {n_bins} ToF bins; give one "
                         "wavelength per bin (tomo4d.neutron.tof_bin_wavelengths)")
    if not np.all(np.diff(w) > 0):
        raise InputError("wavelength_angstrom must increase along the ToF bins")
    if angles.shape != (n_ang,):
        raise InputError(f"{angles.size} angles for {n_ang} projections; give one angle (degrees) per projection")
    if open_beam is not None:
        ob = np.asarray(open_beam, np.float64)
        if ob.shape != (n_bins, rows, cols):
            raise InputError(f"open_beam has shape {ob.shape}; give (bin, row, column) = {(n_bins, rows, cols)} "
                             "(same ToF bins and detector as the projections)")
        n_bad = int(np.count_nonzero(~(ob > 0)))
        if n_bad == ob.size:
            raise InputError("the open beam has no positive count; check the open-beam file")
    if dark is not None:
        d = np.asarray(dark)
        if d.shape not in ((rows, cols), (n_bins, rows, cols)):
            raise InputError(f"dark has shape {d.shape}; give (row, column) or (bin, row, column) of the detector "
                             f"{(rows, cols)}")
    return n_ang, n_bins, rows, cols


def _band_dark(dark, a, b):
    if dark is None:
        return None
    d = np.asarray(dark, np.float64)
    return (d * (b - a) if d.ndim == 2 else d[a:b].sum(axis=0)).astype(np.float32)


def reconstruct_bands(counts, open_beam=None, dark=None, *, wavelength_angstrom, angles_deg, pixel_size_nm: float,
                      options: BandOptions | None = None, progress=None) -> BandVolumes:
    """Per-band attenuation volumes (1/cm) from ToF-resolved projections, through the reconstruction engine.

    Parameters
    ----------
    counts : array-like (angle, bin, row, column)
        Sample counts per projection and ToF bin (numpy, h5py, dask or memory map: one band is read at a
        time), or, with ``open_beam=None``, transmissions (then no sigma is propagated).
    open_beam : (bin, row, column) array or None
        Open-beam counts per ToF bin (``options.open_beam_exposure`` projection exposures).
    dark : (row, column) or (bin, row, column) array or None
        Dark counts per projection exposure and ToF bin (taken as exact).
    wavelength_angstrom : (bin,) array
        Wavelength of each ToF bin (:func:`~tomo4d.neutron.tof_bin_wavelengths`), Å.
    angles_deg : (angle,) array
    pixel_size_nm : float
        Detector pixel at the sample (the voxel length), nm.
    options : BandOptions
    progress : callable, optional
        ``progress(done_bands, n_bands)``.
    """
    import time
    import warnings

    from ..reconstruct import Projections, ReconstructOptions, reconstruct
    from ..reconstruct.core import plan

    o = options or BandOptions()
    if not isinstance(o, BandOptions):
        raise InputError(f"options={show(o)} must be a BandOptions")
    px = check_number("pixel_size_nm", pixel_size_nm, minimum=0, exclusive_minimum=True)
    w = np.asarray(wavelength_angstrom, np.float64).ravel()
    ang = np.asarray(angles_deg, np.float64).ravel()
    n_ang, n_bins, rows, cols = _check_inputs(counts, open_beam, dark, w, ang)
    counts_mode = open_beam is not None
    ob = np.asarray(open_beam, np.float64) / o.open_beam_exposure if counts_mode else None
    spectrum = ob.sum(axis=(1, 2)) if counts_mode else None
    bins = band_bins(w, spectrum, n_bands=o.n_bands, edges_angstrom=o.edges_angstrom)
    weights = np.zeros(n_bins)
    for a, b in bins:
        s = np.ones(b - a) if spectrum is None else np.clip(spectrum[a:b], 0, None)
        weights[a:b] = s / s.sum() if s.sum() > 0 else 1.0 / (b - a)
    wl = np.array([float(np.dot(weights[a:b], w[a:b])) for a, b in bins])
    base = o.reconstruct if o.reconstruct is not None else ReconstructOptions()
    ropts = dataclasses.replace(base, pixel_size_nm=px, allow_missing_flats=not counts_mode or base.allow_missing_flats)
    t0 = time.perf_counter()

    def band_proj(a, b):
        block = np.asarray(counts[:, a:b], np.float64)
        if counts_mode:
            flat = ob[a:b].sum(axis=0).astype(np.float32)
            dk = _band_dark(dark, a, b) if dark is not None else np.zeros_like(flat)  # event detectors: no dark
            return Projections(block.sum(axis=1).astype(np.float32), None, flat, dk, ang, px,
                               f"ToF bins {a}..{b - 1}"), block.sum(axis=1)
        return Projections(np.tensordot(weights[a:b], block, axes=(0, 1)).astype(np.float32), None, None, None, ang,
                           px, f"ToF bins {a}..{b - 1}"), None

    center = ropts.center
    if center is None:  # once, on the sum of every band (the white beam), for every band
        white, _ = band_proj(int(bins[0, 0]), int(bins[-1, 1]))
        center = plan(white, ropts).center
    ropts = dataclasses.replace(ropts, center=float(center))
    gain = fbp_noise_gain(ang, cols, center, options=ropts, rows=o.noise_rows) if (counts_mode and o.noise_rows) \
        else None
    basis = ring_basis(cols, center, ang, options=ropts) if (gain is not None and cols**3 * 4 <= RING_BASIS_BYTES) \
        else None
    vox_cm = px * 1e-7
    mus, sigmas, n_clipped = [], [], 0
    for i, (a, b) in enumerate(bins):
        proj, s_counts = band_proj(int(a), int(b))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # clipped counts are summed into n_clipped
            rec = reconstruct(proj, options=ropts)
        n_clipped += rec.n_clipped
        mus.append(np.asarray(rec.volume.data, np.float32) / np.float32(vox_cm))
        if gain is not None:
            d = 0.0 if proj.dark is None else proj.dark.astype(np.float64)
            flat = proj.flat.astype(np.float64)
            o_counts = flat * o.open_beam_exposure
            var_s = np.maximum(s_counts, 1.0) / np.maximum(s_counts - d, 1.0) ** 2       # (angle, row, column)
            var_f = (np.maximum(o_counts, 1.0) / o.open_beam_exposure ** 2) / np.maximum(flat - d, 1e-12) ** 2
            var = fbp_variance(var_s, center, ang, gain=gain) + fbp_ring_variance(var_f, center, ang, options=ropts,
                                                                                  basis=basis)
            sigmas.append((np.sqrt(var) / vox_cm).astype(np.float32))
        if progress is not None:
            progress(i + 1, len(bins))
    if n_clipped:
        warnings.warn(f"reconstruct_bands: {n_clipped} transmissions were not finite or <= "
                      f"{ropts.min_transmission:g} before -log (zero counts?); set to that floor", stacklevel=2)
    prov = {"engine": "tomo4d.reconstruct (FBP)", "filter": ropts.filter, "rings": ropts.rings,
            "band_choice": "edges" if o.edges_angstrom is not None else "equal open-beam counts",
            "input": "counts" if counts_mode else "transmission", "open_beam_exposure": o.open_beam_exposure,
            "seconds": round(time.perf_counter() - t0, 3)}
    return BandVolumes(wavelength_angstrom=wl, bins=bins, bin_weights=weights, mu_per_cm=np.stack(mus),
                       sigma_per_cm=np.stack(sigmas) if sigmas else None, voxel_size_nm=px, center=float(center),
                       noise_gain=gain, n_clipped=n_clipped, provenance=prov)
