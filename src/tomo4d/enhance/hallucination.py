"""Hallucination control where the truth is known: false particles, particle sizes, spread against error.

Two measurements of whether an enhanced volume invents structure (issue 19):

* :func:`hallucination_report` segments every image (e.g. InDI, bicubic, HQ) by **one fixed rule**,
  labels its particles and compares them with the true particles:

  - *segmentation*: every image is smoothed alike (``smooth_nm``, default none) and thresholded with
    one grey-value band ``[lo, hi]``: the band that best reproduces the true particle mask on the
    reference image (largest Dice of ``lo <= HQ <= hi`` against the true particles, searched over
    ``bins`` histogram edges of HQ's robust 0.1-99.9 percentile range), so the segmentation is the
    one that HQ supports, it needs no training and it is reproducible.  A band (not one threshold)
    keeps a brighter or darker third phase out (e.g. the current collector).  All images must be in
    the reference's intensity units (bicubic converted with the model's scalings).
  - *particles*: :func:`tomo4d.segment.label_particles` of the band mask after a binary opening with
    a ball of ``opening_voxels`` (default 1: removes noise specks and the thin partial-volume sheet
    where a blurred boundary between a darker and a brighter phase crosses the band), distance
    watershed by default (depth ``h_nm``, default two voxels), objects smaller than a sphere of ``min_diameter_nm`` removed (default 4 voxels of the
    largest edge), the same for the true particles (cut at the region's border like the images).
  - *overlap criterion*: an output particle is **false** when less than ``min_overlap`` (default half)
    of its voxels lie within ``tolerance_nm`` (default one voxel) of a true particle; a true particle is
    **missed** when less than ``min_overlap`` of its voxels lie within ``tolerance_nm`` of an output
    particle.  The tolerance keeps a boundary shifted by a voxel (a slightly grown or shrunk small
    particle) from counting as invented or lost; a particle in the matrix, away from every true one,
    is false.  Both are counts of objects, so a true particle split in two is neither false nor
    missed (its size error shows it).
  - *size*: equivalent diameter ``(6 V / pi)^(1/3)`` in nm of mutually best-overlapping (output,
    true) pairs; reported as the mean absolute error, the mean signed error (bias) and the median
    absolute relative error.

* :func:`spread_error_correlation`: Spearman's rank correlation between the InDI spread map (the
  standard deviation of K samples, :func:`tomo4d.enhance.enhance_with_uncertainty`) and the absolute
  error ``|enhanced - reference|``, over **blocks** (default 8^3 voxels: the mean spread and the mean
  error of each block whose mask covers at least half of it).  Blocks are the meaningful unit: a
  user reads the spread map as "where to distrust the output", not voxel by voxel, and a voxel's
  error is dominated by the reference's own noise.  The voxel-wise rho is reported beside it, and the
  mean block error per spread decile.  Positive rho: the spread is higher where the error is higher.

Both results are frozen dataclasses that save to and load from JSON (:meth:`save`, :meth:`load`).
(Module size: about 580 lines, over the usual 500, because most of it is the two result classes with their
documented fields and JSON round trip; the two measurements are judged together in the benchmark and the
report, so they stay in one module.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._validate import as_image, as_mask, check_int, check_labels, check_number, check_same_shape, voxel_size
from ..errors import InputError

__all__ = ["HallucinationOptions", "ParticleAudit", "HallucinationReport", "hallucination_report",
           "particle_band", "audit_particles", "SpreadErrorCorrelation", "spread_error_correlation",
           "spread_error_figure"]


@dataclass(frozen=True)
class HallucinationOptions:
    """Options of :func:`hallucination_report` (see the module text for the rules).

    Attributes
    ----------
    min_overlap : float
        Fraction in (0, 1] of an object that must lie within ``tolerance_nm`` of the other side's
        particles to count as supported (output) or found (true).
    tolerance_nm : float or None
        Distance tolerance of that overlap (None: one voxel of the largest voxel edge; 0: exact).
    min_diameter_nm : float or None
        Objects (output and true) smaller than a sphere of this diameter are removed
        (None: 4 voxels of the largest voxel edge).
    split : bool
        Separate touching particles (distance watershed); otherwise connected components.
    h_nm : float or None
        Watershed depth of :func:`tomo4d.segment.split_touching` (None: two voxels of the largest edge;
        split_touching's own default of half a voxel over-splits thresholded noisy particles, 96
        objects for 8 true particles on the phantom's HQ scan, 10 with two voxels).
    smooth_nm : float
        Gaussian sigma (nm) applied to every image alike before thresholding (0: none).
    opening_voxels : int
        Radius (voxels) of the binary opening of every band mask (0: none): removes noise specks and
        the thin partial-volume sheet where a blurred boundary between a darker and a brighter phase
        crosses the band, alike for every image.
    bins : int
        Histogram edges searched for the band.
    """

    min_overlap: float = 0.5
    tolerance_nm: float | None = None
    min_diameter_nm: float | None = None
    split: bool = True
    h_nm: float | None = None
    smooth_nm: float = 0.0
    opening_voxels: int = 1
    bins: int = 256

    def checked(self) -> HallucinationOptions:
        check_number("min_overlap", self.min_overlap, minimum=0.0, maximum=1.0, exclusive_minimum=True)
        if self.tolerance_nm is not None:
            check_number("tolerance_nm", self.tolerance_nm, minimum=0.0)
        if self.min_diameter_nm is not None:
            check_number("min_diameter_nm", self.min_diameter_nm, minimum=0.0)
        if self.h_nm is not None:
            check_number("h_nm", self.h_nm, minimum=0.0, exclusive_minimum=True)
        check_number("smooth_nm", self.smooth_nm, minimum=0.0)
        check_int("opening_voxels", self.opening_voxels, minimum=0)
        check_int("bins", self.bins, minimum=8)
        return self


@dataclass(frozen=True)
class ParticleAudit:
    """Particles of one segmented image against the true particles.

    Attributes
    ----------
    name : str
    n_particles, n_false : int
        Output particles and those not supported by a true particle.
    false_rate : float
        ``n_false / n_particles`` (nan without particles).
    n_true, n_missed : int
        True particles and those not found.
    missed_rate : float
        ``n_missed / n_true`` (nan without true particles).
    n_pairs : int
        Mutually best-overlapping (output, true) pairs.
    diameter_mae_nm, diameter_bias_nm : float
        Mean absolute and mean signed (output - true) equivalent-diameter error of the pairs (nm).
    diameter_rel_median : float
        Median of ``|d_out - d_true| / d_true`` over the pairs.
    dice : float
        Dice of the band mask against the true particle mask (voxels of the region).
    """

    name: str
    n_particles: int
    n_false: int
    false_rate: float
    n_true: int
    n_missed: int
    missed_rate: float
    n_pairs: int
    diameter_mae_nm: float
    diameter_bias_nm: float
    diameter_rel_median: float
    dice: float


_HEADER = ("image", "particles", "false", "false rate (%)", "true particles", "missed", "missed rate (%)",
           "pairs", "diameter MAE (nm)", "diameter bias (nm)", "median |rel. error| (%)", "Dice")


@dataclass(frozen=True)
class HallucinationReport:
    """False-particle rate, missed-particle rate and size error of several images (one segmentation rule).

    Attributes
    ----------
    audits : tuple of ParticleAudit
        One per image, in the order given.
    reference : str
        Image whose band was fitted to the truth (e.g. ``"HQ"``).
    band : (float, float)
        Grey-value band ``[lo, hi]`` of the particle phase (reference intensity units).
    voxel_size_nm : (float, float, float)
    options : HallucinationOptions
        As used (``tolerance_nm``, ``min_diameter_nm`` and ``h_nm`` resolved to numbers).
    """

    audits: tuple[ParticleAudit, ...]
    reference: str
    band: tuple[float, float]
    voxel_size_nm: tuple[float, float, float]
    options: HallucinationOptions

    def audit(self, name: str) -> ParticleAudit:
        for a in self.audits:
            if a.name == name:
                return a
        raise InputError(f"no image named {name!r} in the report; images: {[a.name for a in self.audits]}")

    def header(self) -> list[str]:
        return list(_HEADER)

    def rows(self) -> list[list]:
        return [[a.name, a.n_particles, a.n_false, 100 * a.false_rate, a.n_true, a.n_missed, 100 * a.missed_rate,
                 a.n_pairs, a.diameter_mae_nm, a.diameter_bias_nm, 100 * a.diameter_rel_median, a.dice]
                for a in self.audits]

    def to_dict(self) -> dict:
        return {"kind": "hallucination_report", "audits": [asdict(a) for a in self.audits],
                "reference": self.reference, "band": list(self.band), "voxel_size_nm": list(self.voxel_size_nm),
                "options": asdict(self.options)}

    @classmethod
    def from_dict(cls, d: Mapping) -> HallucinationReport:
        try:
            audits = tuple(ParticleAudit(**a) for a in d["audits"])
            return cls(audits, str(d["reference"]), tuple(float(v) for v in d["band"]),
                       tuple(float(v) for v in d["voxel_size_nm"]), HallucinationOptions(**d["options"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a hallucination report ({type(exc).__name__}: {exc}); write it with "
                             "HallucinationReport.save") from None

    def save(self, path, *, overwrite: bool = True) -> Path:
        """Write the report as JSON (atomically)."""
        return _save(self.to_dict(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> HallucinationReport:
        return cls.from_dict(_load(path, "hallucination report"))


def _save(d: dict, path, *, overwrite: bool) -> Path:
    from .model import _write_json

    p = Path(path)
    _write_json(p, d, overwrite=overwrite)
    return p


def _load(path, what: str) -> dict:
    from .model import read_json

    return read_json(Path(path), what=what, fix="write it again with its save() method")


# -- particles ---------------------------------------------------------------------------------------------
def _diameters(sizes_vox: np.ndarray, voxel_nm3: float) -> np.ndarray:
    return np.cbrt(6.0 * sizes_vox * voxel_nm3 / math.pi)


def _near(mask: np.ndarray, tol: float, spacing) -> np.ndarray:
    """Voxels within ``tol`` nm of ``mask`` (the mask itself when ``tol`` is 0)."""
    if tol <= 0 or not mask.any():
        return mask
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= tol


def audit_particles(output, true, *, voxel_size_nm, min_overlap: float = 0.5, tolerance_nm: float | None = None,
                    name: str = "output", dice: float = float("nan")) -> ParticleAudit:
    """Count false and missed particles and the size error of particle labels ``output`` against ``true``.

    Both are instance labels of one shape (0 = none, one value per particle, any values); the overlap
    criterion is the module's (``min_overlap`` of an object within ``tolerance_nm`` of the other side's
    particles; default tolerance one voxel of the largest edge).
    """
    out = check_labels("output", output, instances=True, ndim=(2, 3))
    tru = check_labels("true", true, instances=True, ndim=(2, 3), shape=out.shape)
    thr = check_number("min_overlap", min_overlap, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    vs = voxel_size(voxel_size_nm)
    spacing = vs if out.ndim == 3 else vs[1:]
    tol = max(vs) if tolerance_nm is None else check_number("tolerance_nm", tolerance_nm, minimum=0.0)
    _, o = np.unique(out.ravel(), return_inverse=True)
    _, t = np.unique(tru.ravel(), return_inverse=True)
    o = o if out.min() == 0 else o + 1      # 0 stays background
    t = t if tru.min() == 0 else t + 1
    n_o, n_t = int(o.max()), int(t.max())
    size_o = np.bincount(o, minlength=n_o + 1).astype(np.float64)
    size_t = np.bincount(t, minlength=n_t + 1).astype(np.float64)
    o_img, t_img = o.reshape(out.shape), t.reshape(out.shape)
    in_true = np.bincount(o[_near(t_img > 0, tol, spacing).ravel()], minlength=n_o + 1)[1:]
    in_out = np.bincount(t[_near(o_img > 0, tol, spacing).ravel()], minlength=n_t + 1)[1:]
    false = in_true < thr * size_o[1:]
    missed = in_out < thr * size_t[1:]
    # mutually best-overlapping pairs
    both = (o > 0) & (t > 0)
    key = o[both].astype(np.int64) * (n_t + 1) + t[both]
    pairs, inter = np.unique(key, return_counts=True)
    po, pt = pairs // (n_t + 1), pairs % (n_t + 1)
    best_t = np.zeros(n_o + 1, np.int64)
    best_o = np.zeros(n_t + 1, np.int64)
    for order_by, best, other in ((po, best_t, pt), (pt, best_o, po)):
        idx = np.lexsort((-inter, order_by))          # by object, largest intersection first
        first = np.r_[True, order_by[idx][1:] != order_by[idx][:-1]]
        best[order_by[idx][first]] = other[idx][first]
    ko = np.arange(1, n_o + 1)
    mutual = ko[(best_t[1:] > 0) & (best_o[best_t[1:]] == ko)]
    if out.ndim == 3:
        vox = float(np.prod(vs))
        d_o, d_t = _diameters(size_o[mutual], vox), _diameters(size_t[best_t[mutual]], vox)
    else:     # equivalent circle diameter of a 2D image (in-plane voxel edges)
        vox = float(np.prod(vs[1:]))
        d_o, d_t = np.sqrt(4 * size_o[mutual] * vox / math.pi), np.sqrt(4 * size_t[best_t[mutual]] * vox / math.pi)
    err = d_o - d_t
    nan = float("nan")
    return ParticleAudit(str(name), n_o, int(false.sum()), float(false.sum()) / n_o if n_o else nan, n_t,
                         int(missed.sum()), float(missed.sum()) / n_t if n_t else nan, int(mutual.size),
                         float(np.mean(np.abs(err))) if err.size else nan, float(np.mean(err)) if err.size else nan,
                         float(np.median(np.abs(err) / d_t)) if err.size else nan, float(dice))


def particle_band(reference, true_mask, *, region=None, bins: int = 256) -> tuple[float, float]:
    """The grey-value band ``[lo, hi]`` whose mask ``lo <= reference <= hi`` best matches ``true_mask``
    (largest Dice over the voxels of ``region``), searched over ``bins`` edges of the reference's
    0.1-99.9 percentile range (values outside it fall into the end bins)."""
    ref = as_image(reference, name="reference")
    tm = np.asarray(true_mask).astype(bool)
    if tm.shape != ref.shape or not tm.any():
        raise InputError(f"true_mask (shape {tm.shape}, {int(tm.sum())} particle voxels) must have the reference's "
                         f"shape {ref.shape} and hold particle voxels; give the true particles of the imaged region")
    reg = np.ones(ref.shape, bool) if region is None else as_mask(region, ref.shape, name="region")
    bins = check_int("bins", bins, minimum=8)
    v, m = ref[reg], tm[reg]
    if not m.any():
        raise InputError("region holds no true particle voxel; choose a region that contains particles")
    lo, hi = np.percentile(v, [0.1, 99.9])
    if not hi > lo:
        raise InputError("reference has no contrast in the region (constant grey values); cannot fit a band")
    edges = np.linspace(lo, hi, bins + 1)
    k = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, bins - 1)
    pos = np.bincount(k[m], minlength=bins).astype(np.float64)
    allc = np.bincount(k, minlength=bins).astype(np.float64)
    cp, ca = np.r_[0, np.cumsum(pos)], np.r_[0, np.cumsum(allc)]
    # band of bins i..j-1: TP = cp[j]-cp[i], predicted = ca[j]-ca[i]; Dice = 2TP / (predicted + |true|)
    tp = cp[None, :] - cp[:, None]
    pred = ca[None, :] - ca[:, None]
    dice = np.full(tp.shape, -1.0)
    np.divide(2 * tp, pred + m.sum(), out=dice, where=pred > 0)
    dice = np.triu(dice, 1) + np.tril(np.full_like(dice, -1.0))
    i, j = np.unravel_index(int(np.argmax(dice)), dice.shape)
    b_lo = -np.inf if i == 0 else float(edges[i])
    b_hi = np.inf if j == bins else float(edges[j])
    return float(b_lo), float(b_hi)


def _particles(mask, vs, opts: HallucinationOptions, min_volume_nm3: float) -> np.ndarray:
    from ..segment import label_particles

    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    return label_particles(mask, voxel_size_nm=vs, min_volume_nm3=min_volume_nm3, split=opts.split,
                           h_nm=opts.h_nm).labels


def hallucination_report(images: Mapping[str, object], true_particles, *, reference: str = "HQ",
                         voxel_size_nm=None, region=None, particle_class: int | None = None,
                         options: HallucinationOptions | None = None) -> HallucinationReport:
    """Segment every image by one rule and count false / missed particles and the size error.

    Parameters
    ----------
    images : mapping of name to (z, y, x) array or Volume
        Co-registered images of one region in the reference's intensity units, e.g.
        ``{"InDI": out, "bicubic": bic, "HQ": hq}``.
    true_particles : (z, y, x) int array or Volume
        True particle labels (0 = none; a phantom's :meth:`GroundTruth.particle_labels`), or, with
        ``particle_class``, phase labels (e.g. an HQ-derived segmentation) whose particles are then
        labelled with the options' rule.
    reference : str
        Name in ``images`` whose grey values define the particle band (the HQ scan).
    voxel_size_nm : float or (z, y, x), optional
        Default: the first Volume's.
    region : (z, y, x) bool array, optional
        Voxels judged (e.g. the scans' field of view); elsewhere nothing counts.
    particle_class : int, optional
        See ``true_particles``.
    options : HallucinationOptions, optional

    Returns
    -------
    HallucinationReport
    """
    opts = (options or HallucinationOptions()).checked()
    if not images:
        raise InputError("images is empty; give named images, e.g. {'InDI': out, 'bicubic': bic, 'HQ': hq}")
    if reference not in images:
        raise InputError(f"reference={reference!r} is not one of the images {list(images)}; name the HQ image")
    vs = voxel_size(voxel_size_nm, *images.values(), true_particles)
    arrs = {str(k): as_image(v, name=f"images[{k!r}]") for k, v in images.items()}
    shape = arrs[reference].shape
    for k, a in arrs.items():
        check_same_shape(arrs[reference], a, (f"images[{reference!r}]", f"images[{k!r}]"))
    reg = np.ones(shape, bool) if region is None else as_mask(region, shape, name="region")
    d_min = 4.0 * max(vs) if opts.min_diameter_nm is None else float(opts.min_diameter_nm)
    tol = max(vs) if opts.tolerance_nm is None else float(opts.tolerance_nm)
    h = 2.0 * max(vs) if opts.h_nm is None else float(opts.h_nm)
    opts = dataclasses.replace(opts, tolerance_nm=tol, min_diameter_nm=d_min, h_nm=h)
    v_min = math.pi / 6.0 * d_min ** 3
    if particle_class is not None:
        phases = check_labels("true_particles", true_particles, shape=shape, ndim=3)
        pc = check_int("particle_class", particle_class, minimum=0)
        tru = _particles((phases == pc) & reg, vs, opts, v_min)
    else:
        tru = check_labels("true_particles", true_particles, shape=shape, ndim=3, instances=True)
        tru = np.where(reg, tru, 0)
        sizes = np.bincount(tru.ravel())
        tru = np.where(sizes[tru] * float(np.prod(vs)) >= v_min, tru, 0)
    if not tru.any():
        raise InputError("true_particles has no particle in the region (after removing those smaller than "
                         f"min_diameter_nm={d_min:g}); give the true particles of the imaged region")
    sig = [opts.smooth_nm / v for v in vs]

    def prep(a):
        return ndimage.gaussian_filter(a, sig) if opts.smooth_nm > 0 else a

    true_mask = tru > 0
    r = int(opts.opening_voxels)
    ball = np.sum(np.square(np.indices((2 * r + 1,) * 3) - r), axis=0) <= r * r
    band = particle_band(prep(arrs[reference]), true_mask, region=reg, bins=opts.bins)
    audits = []
    for name, a in arrs.items():
        b = prep(a)
        m = (b >= band[0]) & (b <= band[1]) & reg
        if opts.opening_voxels:
            m = ndimage.binary_opening(m, ball)
        dice = 2.0 * float((m & true_mask).sum()) / float(m.sum() + true_mask.sum())
        lab = _particles(m, vs, opts, v_min)
        audits.append(audit_particles(lab, tru, voxel_size_nm=vs, min_overlap=opts.min_overlap, tolerance_nm=tol,
                                      name=name, dice=dice))
    return HallucinationReport(tuple(audits), str(reference), band, vs, opts)


# -- spread against error ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpreadErrorCorrelation:
    """Rank correlation between the spread (uncertainty) map and the absolute error map.

    Attributes
    ----------
    rho : float
        Spearman's rho over blocks (mean spread vs mean absolute error of each block).
    p_value : float
        Its two-sided p-value (scipy; blocks treated as independent).
    n_blocks : int
    block : (int, int, int)
        Block edge in voxels (z, y, x).
    rho_voxels : float
        Spearman's rho over voxels (a regular subsample of at most 200 000 voxels of the mask).
    error_by_spread_decile : tuple of float
        Mean block error in each tenth of the blocks sorted by spread (lowest spread first).
    spread_mean, error_mean : float
        Over the judged voxels (intensity units of the inputs).
    block_spread, block_error : ndarray
        Per-block means (for the figure).
    """

    rho: float
    p_value: float
    n_blocks: int
    block: tuple[int, int, int]
    rho_voxels: float
    error_by_spread_decile: tuple[float, ...]
    spread_mean: float
    error_mean: float
    block_spread: np.ndarray = field(repr=False)
    block_error: np.ndarray = field(repr=False)

    @property
    def decile_ratio(self) -> float:
        """Mean error of the highest-spread tenth of the blocks over that of the lowest."""
        d = self.error_by_spread_decile
        return float(d[-1] / d[0]) if d and d[0] > 0 else float("nan")

    def summary(self) -> dict:
        return {"rho": self.rho, "p_value": self.p_value, "n_blocks": self.n_blocks, "block": list(self.block),
                "rho_voxels": self.rho_voxels, "decile_ratio": self.decile_ratio,
                "spread_mean": self.spread_mean, "error_mean": self.error_mean}

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(kind="spread_error_correlation", block=list(self.block),
                 error_by_spread_decile=list(self.error_by_spread_decile),
                 block_spread=self.block_spread.tolist(), block_error=self.block_error.tolist())
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> SpreadErrorCorrelation:
        try:
            return cls(float(d["rho"]), float(d["p_value"]), int(d["n_blocks"]), tuple(int(v) for v in d["block"]),
                       float(d["rho_voxels"]), tuple(float(v) for v in d["error_by_spread_decile"]),
                       float(d["spread_mean"]), float(d["error_mean"]),
                       np.asarray(d["block_spread"], np.float64), np.asarray(d["block_error"], np.float64))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a spread/error correlation ({type(exc).__name__}: {exc}); write it with "
                             "SpreadErrorCorrelation.save") from None

    def save(self, path, *, overwrite: bool = True) -> Path:
        """Write the result as JSON (atomically)."""
        return _save(self.to_dict(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> SpreadErrorCorrelation:
        return cls.from_dict(_load(path, "spread/error correlation"))


def _block_means(a: np.ndarray, m: np.ndarray, b: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-block sums of ``a * m`` and counts of ``m`` over whole blocks (a partial edge block is dropped)."""
    n = [s // k for s, k in zip(a.shape, b)]
    crop = tuple(slice(0, nk * k) for nk, k in zip(n, b))
    shp = (n[0], b[0], n[1], b[1], n[2], b[2])
    w = m[crop].reshape(shp).sum((1, 3, 5), dtype=np.float64)
    s = np.where(m, a, 0)[crop].reshape(shp).sum((1, 3, 5), dtype=np.float64)
    return s.ravel(), w.ravel()


def spread_error_correlation(spread, enhanced, reference, *, block: int | tuple[int, int, int] = 8, mask=None,
                             min_fill: float = 0.5) -> SpreadErrorCorrelation:
    """Spearman's rho between the spread map and ``|enhanced - reference|``, block-wise (and voxel-wise).

    Parameters
    ----------
    spread : (z, y, x) array or Volume
        The spread (e.g. :attr:`UncertaintyResult.spread`).
    enhanced : (z, y, x) array or Volume
        The enhanced volume whose error is judged (e.g. :attr:`UncertaintyResult.mean`), same shape.
    reference : (z, y, x) array or Volume
        HQ or the truth, same shape and intensity units as ``enhanced``.
    block : int or (int, int, int)
        Block edge in voxels; the volume must hold at least 10 whole blocks.
    mask : (z, y, x) bool array, optional
        Voxels judged; a block counts when at least ``min_fill`` of it is in the mask.
    min_fill : float
        In (0, 1].
    """
    from scipy.stats import spearmanr

    s = as_image(spread, name="spread")
    e = as_image(enhanced, name="enhanced")
    r = as_image(reference, name="reference")
    check_same_shape(s, e, ("spread", "enhanced"))
    check_same_shape(e, r, ("enhanced", "reference"))
    if np.any(s < 0):
        raise InputError("spread has negative values; give the standard deviation of the samples (>= 0)")
    b = (block,) * 3 if np.isscalar(block) else tuple(block)
    if len(b) != 3:
        raise InputError(f"block={block!r} must be one positive integer or three (z, y, x)")
    b = tuple(check_int("block", v, minimum=1) for v in b)
    fill = check_number("min_fill", min_fill, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    m = np.ones(s.shape, bool) if mask is None else as_mask(mask, s.shape, name="mask")
    err = np.abs(e - r)
    ss, w = _block_means(s, m, b)
    se, _ = _block_means(err, m, b)
    keep = w >= fill * float(np.prod(b))
    if keep.sum() < 10:
        raise InputError(f"only {int(keep.sum())} blocks of {b} voxels are inside the mask (at least 10 needed); "
                         "give a smaller block= or a larger volume")
    bs, be = ss[keep] / w[keep], se[keep] / w[keep]
    rho, p = spearmanr(bs, be)
    every = max(1, int(m.sum()) // 200_000)
    rv = spearmanr(s[m][::every], err[m][::every])[0]
    order = np.argsort(bs, kind="stable")
    dec = tuple(float(np.mean(be[part])) for part in np.array_split(order, 10))
    return SpreadErrorCorrelation(float(rho), float(p), int(keep.sum()), b, float(rv), dec, float(s[m].mean()),
                                  float(err[m].mean()), bs.astype(np.float64), be.astype(np.float64))


def spread_error_figure(result: SpreadErrorCorrelation, spread=None, error=None, *, z: int | None = None):
    """Block spread against block error (with rho and the decile means); with ``spread`` and ``error``
    volumes also one slice of each.  A matplotlib :class:`~matplotlib.figure.Figure` (object API)."""
    from matplotlib.figure import Figure

    maps = spread is not None and error is not None
    fig = Figure(figsize=(10.5 if maps else 4.5, 3.8))
    n = 3 if maps else 1
    ax = fig.add_subplot(1, n, n)
    ax.scatter(result.block_spread, result.block_error, s=4, alpha=0.35, color="tab:blue", lw=0)
    order = np.argsort(result.block_spread, kind="stable")
    centres = [float(np.mean(result.block_spread[p])) for p in np.array_split(order, 10)]
    ax.plot(centres, result.error_by_spread_decile, "o-", color="tab:red", ms=3, label="decile means")
    ax.set_xlabel("block mean spread")
    ax.set_ylabel("block mean |error|")
    ax.set_title(f"Spearman rho = {result.rho:.2f} ({result.n_blocks} blocks)", fontsize=9)
    ax.legend(fontsize=8)
    if maps:
        sp, er = np.asarray(spread), np.asarray(error)
        k = sp.shape[0] // 2 if z is None else check_int("z", z, minimum=0, maximum=sp.shape[0] - 1)
        for i, (a, title) in enumerate(((sp[k], "spread"), (er[k], "|error|"))):
            axm = fig.add_subplot(1, n, i + 1)
            im = axm.imshow(a, cmap="magma", vmin=0, vmax=float(np.percentile(a, 99.5)) or None)
            axm.set_title(f"{title}, z = {k}", fontsize=9)
            axm.set_axis_off()
            fig.colorbar(im, ax=axm, shrink=0.8)
    fig.tight_layout()
    return fig
