"""Joint X-ray/neutron analysis: common grid, bivariate histogram, Gaussian-mixture phases.

X-rays see electron density (heavy elements, morphology), neutrons see
lithium, hydrogen and some isotopes; a phase that looks alike in one modality
usually separates in the other.  After bringing both volumes onto one grid
(resampling by the voxel-size ratio, then a translation found by normalised
mutual information with :func:`tomo4d.register.register_multimodal`, or a
given Phi), every voxel is a point (X-ray value, neutron value); phases are
clusters in that plane, found by a Gaussian mixture (scikit-learn) fitted on
standardised values.  Axes ``(z, y, x)``.
"""

# ``tomo4d.register`` is imported inside align_modalities: it loads scipy.ndimage (~0.2 s), which
# the rest of tomo4d.neutron does not need.
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .._array import as_float32
from .._validate import show
from ..errors import InputError
from ..volume import Volume, normalise_voxel_size

log = logging.getLogger(__name__)

__all__ = ["bin_to_grid", "resample_to_grid", "AlignedPair", "align_modalities", "JointHistogram", "joint_histogram",
           "JointPhases", "segment_joint_phases", "segmentation_accuracy"]


def _vs(name, v):
    try:
        return np.asarray(normalise_voxel_size(v), dtype=np.float64)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None


def _arr3(name, a):
    x = a.numpy() if isinstance(a, Volume) else np.asarray(a)
    if x.ndim != 3:
        raise InputError(f"{name} has shape {x.shape}; give a 3D (z, y, x) volume")
    x = as_float32(x)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or infinite values; fill them first (e.g. numpy.nan_to_num)")
    return x


def resample_to_grid(image, *, voxel_size_nm, target_voxel_size_nm, target_shape=None, order: int = 1) -> np.ndarray:
    """Resample a ``(z, y, x)`` volume from its voxel size onto another voxel size (same origin corner).

    Parameters
    ----------
    image : array or Volume
        The volume.
    voxel_size_nm, target_voxel_size_nm : float or (z, y, x)
        Voxel sizes of the input and of the output grid, nm.
    target_shape : (3,) int, optional
        Output shape (cropped or padded with the edge values); default the
        rounded physical extent.
    order : int
        Spline order (1 linear; 0 for label images).

    Returns
    -------
    numpy.ndarray (float32)
    """
    from scipy import ndimage

    a = _arr3("image", image)
    f = _vs("voxel_size_nm", voxel_size_nm) / _vs("target_voxel_size_nm", target_voxel_size_nm)
    if not (isinstance(order, (int, np.integer)) and 0 <= order <= 5):
        raise InputError(f"order={show(order)} must be an integer spline order 0..5")
    shape = (tuple(int(s) for s in target_shape) if target_shape is not None
             else tuple(max(1, int(round(n * k))) for n, k in zip(a.shape, f)))
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"target_shape={show(target_shape)} must be three positive integers")
    # output voxel centre i maps to input coordinate (i + 0.5) / f - 0.5 (grid_mode)
    coords = [((np.arange(n) + 0.5) / k - 0.5) for n, k in zip(shape, f)]
    zz, yy, xx = np.meshgrid(*coords, indexing="ij")
    out = ndimage.map_coordinates(a, [zz, yy, xx], order=int(order), mode="nearest", prefilter=order > 1,
                                  output=np.float32)
    return out


def bin_to_grid(image, bin_factor) -> np.ndarray:
    """Block mean of a fine ``(z, y, x)`` volume onto a grid ``bin_factor`` times coarser (same corner).

    The X-ray volume on the neutron voxels (for the joint histogram): each output voxel is the mean
    of its ``bin_factor`` block; trailing voxels that do not fill a block are dropped (output shape
    ``image.shape // bin_factor``), as in :func:`~tomo4d.neutron.attenuation_from_phases`.

    Parameters
    ----------
    image : array or Volume
    bin_factor : int or (3,) int
        Fine voxels per coarse voxel along each axis.

    Returns
    -------
    numpy.ndarray (float32)
    """
    a = _arr3("image", image)
    b = (bin_factor,) * 3 if np.ndim(bin_factor) == 0 else tuple(bin_factor)
    if len(b) != 3 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in b):
        raise InputError(f"bin_factor={show(bin_factor)} must be a positive integer or three of them (z, y, x)")
    n = tuple(s // f for s, f in zip(a.shape, b))
    if min(n) < 1:
        raise InputError(f"bin_factor={show(bin_factor)} is larger than the image {a.shape}; the result would be empty")
    c = a[: n[0] * b[0], : n[1] * b[1], : n[2] * b[2]]
    return c.reshape(n[0], b[0], n[1], b[1], n[2], b[2]).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


@dataclass(frozen=True, eq=False)
class AlignedPair:
    """Two modalities on the fixed grid.

    Attributes
    ----------
    fixed, moving : float32 (z, y, x)
        The fixed volume and the moving one resampled and aligned onto it.
    phi : (4, 4) float64
        Transform used (fixed voxel -> resampled-moving voxel, about the fixed centre).
    registered : bool
        ``phi`` was found by :func:`tomo4d.register.register_multimodal` (False: given or identity).
    voxel_size_nm : (3,) float
        Voxel size of the common grid, nm.
    nmi : float
        Normalised mutual information after alignment (1 independent, 2 identical).
    registration : ModalityRegistration or Registration or None
        The registration found (rotation, translation and their uncertainties for ``transform`` rigid or
        affine: :class:`tomo4d.register.modalities.ModalityRegistration`); None when ``phi`` was given.
    """

    fixed: np.ndarray
    moving: np.ndarray
    phi: np.ndarray
    registered: bool
    voxel_size_nm: tuple
    nmi: float
    registration: object = None


def align_modalities(fixed, moving, *, fixed_voxel_size_nm, moving_voxel_size_nm, phi=None, register: bool = True,
                     search_px: float = 6.0, order: int = 1, transform: str = "translation",
                     moving_psf_sigma_nm: float | None = None, fixed_psf_sigma_nm: float = 0.0,
                     fixed_labels=None) -> AlignedPair:
    """Bring ``moving`` (e.g. neutron) onto the grid of ``fixed`` (e.g. X-ray) and align it.

    ``moving`` is first resampled by the voxel-size ratio (origins at the first voxel
    corner), then moved by ``phi`` (a 4x4 Phi about the fixed centre, fixed -> moving
    voxel coordinates), or by the transform found when ``phi`` is None and ``register``
    is set, or left as is.  For a coarse neutron volume, pass the X-ray volume already
    binned to a similar voxel size as ``fixed`` (the joint histogram needs similar
    resolutions; upsampling the neutron volume does not add detail).

    Registration: ``transform="rigid"`` or ``"affine"``:
    :func:`tomo4d.register.modalities.register_modalities` models the (coarser, blurrier) ``moving``
    volume from ``fixed`` through a fitted grey-level mapping (or the phase fractions of
    ``fixed_labels``), the voxel box and the extra PSF ``moving_psf_sigma_nm`` beyond ``fixed_psf_sigma_nm``
    (None: estimated), and reports the rotation, translation and their uncertainties
    (``AlignedPair.registration``); ``"translation"``: the mutual-information translation search
    :func:`tomo4d.register.register_multimodal` on the resampled volume (the default, as before: on the
    two-voxel-size test phantom of tests/neutron/test_joint.py the rigid model missed x by 1.5 px with an
    estimated PSF; see the design notes of issue 21).
    """
    from ..register import apply_phi
    from ..register.phi import check_phi

    f = _arr3("fixed", fixed)
    m = _arr3("moving", moving)
    vs_f = _vs("fixed_voxel_size_nm", fixed_voxel_size_nm)
    m_on = resample_to_grid(m, voxel_size_nm=moving_voxel_size_nm, target_voxel_size_nm=vs_f, target_shape=f.shape,
                            order=order)
    registered, reg = False, None
    if phi is not None:
        p = check_phi(phi)
    elif register and transform == "translation":
        from ..register import register_multimodal

        reg = register_multimodal(f, m_on, search_px=search_px)
        p = np.asarray(reg.phi, dtype=np.float64)
        registered = True
        log.info("multimodal registration: translation %s px", np.round(p[:3, 3], 3))
    elif register:
        if transform not in ("rigid", "affine"):
            raise InputError(f"transform={show(transform)} is not known; use translation, rigid or affine")
        reg = _register_rigid(f, m, vs_f, _vs("moving_voxel_size_nm", moving_voxel_size_nm), transform=transform,
                              search_px=search_px, moving_psf_sigma_nm=moving_psf_sigma_nm,
                              fixed_psf_sigma_nm=fixed_psf_sigma_nm, fixed_labels=fixed_labels)
        p = _phi_on_fixed_grid(reg, f.shape, vs_f)
        registered = True
    else:
        p = np.eye(4)
    if not np.allclose(p, np.eye(4)):
        m_on = apply_phi(m_on, p, order=order)
    from ..register.multimodal import normalised_mutual_information

    nmi = float(normalised_mutual_information(f, m_on))
    return AlignedPair(f, np.asarray(m_on, np.float32), p, registered, tuple(float(v) for v in vs_f), nmi, reg)


def _register_rigid(f, m, vs_f, vs_m, *, transform, search_px, moving_psf_sigma_nm, fixed_psf_sigma_nm, fixed_labels):
    """The coarse ``m`` (neutron) modelled from ``f`` (X-ray): :func:`tomo4d.register.modalities.register_modalities`
    with the roles of its fixed (coarse) and moving (sharp) images."""
    from ..register.modalities import register_modalities

    reg = register_modalities(m, f, fixed_voxel_size_nm=vs_m, moving_voxel_size_nm=vs_f, transform=transform,
                              fixed_psf_sigma_nm=moving_psf_sigma_nm, moving_psf_sigma_nm=fixed_psf_sigma_nm,
                              moving_labels=fixed_labels, search_px=search_px)
    log.info("multimodal registration: rotation %s +- %s deg, translation %s +- %s nm", np.round(reg.rotation_deg, 3),
             np.round(reg.rotation_sigma_deg, 3), np.round(reg.translation_nm, 1), np.round(reg.translation_sigma_nm, 1))
    return reg


def _phi_on_fixed_grid(reg, shape, vs_f) -> np.ndarray:
    """Phi about the fixed centre: fixed voxel -> voxel of the moving volume resampled onto the fixed voxel size.

    ``reg`` maps moving (coarse) positions X_m to fixed ones: X_f = A (X_m - C_m) + C_m + t (nm, first corners at
    0), so X_m = A^-1 (X_f - C_m - t) + C_m."""
    A = np.asarray(reg.matrix, float)
    Ai = np.linalg.inv(A)
    C_m = np.asarray(reg.fixed_shape, float) * np.asarray(reg.fixed_voxel_size_nm) / 2.0
    c = (np.asarray(shape, float) - 1.0) / 2.0
    X_c = (c + 0.5) * vs_f
    x_m = (Ai @ (X_c - C_m - reg.translation_nm) + C_m) / vs_f - 0.5
    out = np.eye(4)
    out[:3, :3] = np.diag(1.0 / vs_f) @ Ai @ np.diag(vs_f)
    out[:3, 3] = x_m - c
    return out


@dataclass(frozen=True)
class JointHistogram:
    """Bivariate histogram: ``counts[i, j]`` voxels with ``a`` in bin i and ``b`` in bin j.

    ``a_edges``/``b_edges`` are the bin edges (units of the inputs, e.g. X-ray grey value and
    neutron attenuation 1/cm).
    """

    counts: np.ndarray
    a_edges: np.ndarray
    b_edges: np.ndarray


def _pair(a, b, mask):
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise InputError(f"the two modalities have shapes {x.shape} and {y.shape}; bring them onto one grid first "
                         "(align_modalities)")
    if mask is None:
        sel = np.isfinite(x) & np.isfinite(y)
    else:
        mk = np.asarray(mask)
        if mk.shape != x.shape:
            raise InputError(f"mask has shape {mk.shape} but the volumes have shape {x.shape}")
        sel = mk.astype(bool) & np.isfinite(x) & np.isfinite(y)
    if sel.sum() < 10:
        raise InputError(f"only {int(sel.sum())} voxels to analyse (mask and finite values); need at least 10")
    return x, y, sel


def joint_histogram(a, b, *, bins: int = 128, mask=None, range_a=None, range_b=None) -> JointHistogram:
    """Bivariate histogram of two same-shape volumes (default ranges: 0.1-99.9 percentiles)."""
    x, y, sel = _pair(a, b, mask)
    if not (isinstance(bins, (int, np.integer)) and 2 <= bins <= 4096):
        raise InputError(f"bins={show(bins)} must be an integer in 2..4096")
    ra = tuple(np.percentile(x[sel], [0.1, 99.9])) if range_a is None else tuple(map(float, range_a))
    rb = tuple(np.percentile(y[sel], [0.1, 99.9])) if range_b is None else tuple(map(float, range_b))
    if not (ra[1] > ra[0] and rb[1] > rb[0]):
        raise InputError("a histogram range is empty (constant image?); give range_a/range_b")
    h, ea, eb = np.histogram2d(x[sel], y[sel], bins=int(bins), range=[ra, rb])
    return JointHistogram(h.astype(np.int64), ea, eb)


@dataclass(frozen=True, eq=False)
class JointPhases:
    """Gaussian-mixture phases in the (a, b) plane.

    Attributes
    ----------
    labels : int16 (z, y, x)
        Phase 1..k of each voxel (0 outside the mask); phases sorted by increasing
        mean of ``b`` (the neutron value), then ``a``.
    probability : float32 (z, y, x)
        Posterior probability of the assigned phase (0 outside the mask).
    means : (k, 2)
        Phase means (a, b), input units.
    covariances : (k, 2, 2)
        Phase covariances, input units.
    weights : (k,)
        Mixture weights.
    converged : bool
        The EM iterations converged.
    criterion : str
        How the number of phases was set: ``"bic"`` (chosen by the Bayesian information criterion over
        ``candidates``) or ``"given"`` (``n_phases=`` passed).
    candidates : tuple of int
        Numbers of phases tried (empty when given).
    criterion_values : tuple of float
        BIC of each candidate (``-2 log L + p log n`` on the standardised fitted samples, lower is
        better; empty when given).
    """

    labels: np.ndarray
    probability: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    converged: bool
    criterion: str = "given"
    candidates: tuple = ()
    criterion_values: tuple = ()

    @property
    def n_phases(self) -> int:
        """Number of phases (mixture components)."""
        return int(len(self.weights))

    def criterion_dict(self) -> dict:
        """``{"criterion", "n_phases", "candidates", "criterion_values"}`` (JSON-ready): how k was chosen."""
        return {"criterion": self.criterion, "n_phases": self.n_phases, "candidates": [int(k) for k in self.candidates],
                "criterion_values": [float(v) for v in self.criterion_values]}

    def to_columns(self) -> dict:
        """Per phase: ``phase`` (1..k), ``mean_a``, ``mean_b`` (input units), ``weight`` (mixture weight) and
        ``voxel_fraction`` (share of the segmented voxels assigned to it)."""
        k = len(self.weights)
        counts = np.bincount(np.asarray(self.labels, np.int64).ravel(), minlength=k + 1)[1:k + 1]
        total = max(int(counts.sum()), 1)
        return {"phase": np.arange(1, k + 1), "mean_a": np.asarray(self.means[:, 0], float),
                "mean_b": np.asarray(self.means[:, 1], float), "weight": np.asarray(self.weights, float),
                "voxel_fraction": counts / total}


def _fit_mixture(Z, k: int, *, seed: int, n_init: int):
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(n_components=int(k), covariance_type="full", n_init=int(n_init), random_state=int(seed),
                         reg_covar=1e-5)
    return gm.fit(Z)


def _phase_range(n_phases, max_phases, min_phases):
    """The candidate numbers of phases: ``(n_phases,)`` when given, else ``min_phases..max_phases``."""
    if n_phases is not None:
        if not (isinstance(n_phases, (int, np.integer)) and 1 <= n_phases <= 32):
            raise InputError(f"n_phases={show(n_phases)} must be an integer in 1..32, or None (chosen by BIC)")
        return (int(n_phases),)
    for name, v in (("max_phases", max_phases), ("min_phases", min_phases)):
        if not (isinstance(v, (int, np.integer)) and 1 <= v <= 32):
            raise InputError(f"{name}={show(v)} must be an integer in 1..32")
    if min_phases > max_phases:
        raise InputError(f"min_phases={min_phases} > max_phases={max_phases}; give min_phases <= max_phases")
    return tuple(range(int(min_phases), int(max_phases) + 1))


def segment_joint_phases(a, b, *, n_phases: int | None = None, max_phases: int = 8, min_phases: int = 1, mask=None,
                         seed: int = 0, max_samples: int = 200_000, n_init: int = 3) -> JointPhases:
    """Segment phases as a Gaussian mixture of (a, b) voxel values (scikit-learn).

    The number of phases is chosen by the Bayesian information criterion (BIC = -2 log L + p log n,
    p = 6 k - 1 free parameters of a full-covariance 2D mixture of k components, n fitted voxels):
    every k in ``min_phases..max_phases`` is fitted and the lowest BIC wins; ``n_phases=`` overrides
    the choice.  The curve and the choice are in the result (:meth:`JointPhases.criterion_dict`).
    BIC assumes Gaussian clusters: many partial-volume voxels between phases (interfaces blurred over a
    few voxels) form bridges that it may fit with extra components; give ``n_phases`` or a mask of
    the resolved voxels then.

    Parameters
    ----------
    a, b : (z, y, x) arrays
        The two modalities on one grid (e.g. X-ray grey value and neutron attenuation).
    n_phases : int, optional
        Number of phases (mixture components); None: chosen by BIC.
    max_phases, min_phases : int
        Range of the BIC choice (1..32).
    mask : bool array, optional
        Voxels to segment.
    seed : int
        Seed of the subsampling and the mixture initialisation.
    max_samples : int
        The mixtures are fitted (and BIC evaluated) on at most this many random voxels, then applied to all.
    n_init : int
        Independent initialisations per mixture (the best is kept).
    """
    x, y, sel = _pair(a, b, mask)
    ks = _phase_range(n_phases, max_phases, min_phases)
    if not (isinstance(max_samples, (int, np.integer)) and max_samples >= 10 * max(ks)):
        raise InputError(f"max_samples={show(max_samples)} must be an integer >= 10 x the number of phases ({max(ks)})")
    X = np.stack([x[sel], y[sel]], axis=1)
    mean, std = X.mean(0), X.std(0)
    std[std == 0] = 1.0
    Z = (X - mean) / std
    rng = np.random.default_rng(seed)
    fit_on = Z if Z.shape[0] <= max_samples else Z[rng.choice(Z.shape[0], max_samples, replace=False)]
    if fit_on.shape[0] < 2 * max(ks):
        raise InputError(f"{fit_on.shape[0]} voxels cannot fit {max(ks)} phases; give fewer phases or more voxels")
    fits = [_fit_mixture(fit_on, k, seed=seed, n_init=n_init) for k in ks]
    if n_phases is None:
        bic = [float(g.bic(fit_on)) for g in fits]
        gm = fits[int(np.argmin(bic))]
        how = "bic"
        log.info("joint phases: BIC %s over k = %s -> %d phases", np.round(bic, 1).tolist(), list(ks), gm.n_components)
    else:
        gm, how, bic, ks = fits[0], "given", [], ()
    means = gm.means_ * std + mean
    covs = gm.covariances_ * np.outer(std, std)[None]
    order = np.lexsort((means[:, 0], means[:, 1]))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    post = gm.predict_proba(Z)
    lab = np.zeros(x.shape, np.int16)
    prob = np.zeros(x.shape, np.float32)
    best = post.argmax(1)
    lab[sel] = (rank[best] + 1).astype(np.int16)
    prob[sel] = post[np.arange(best.size), best]
    return JointPhases(lab, prob, means[order], covs[order], gm.weights_[order], bool(gm.converged_), criterion=how,
                       candidates=tuple(int(k) for k in ks), criterion_values=tuple(bic))


def segmentation_accuracy(labels, truth, *, mask=None) -> float:
    """Fraction of voxels whose label matches ``truth`` after the best one-to-one relabelling (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(labels)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise InputError(f"labels {p.shape} and truth {t.shape} must have the same shape")
    sel = np.ones(p.shape, bool) if mask is None else np.asarray(mask, bool)
    pv, tv = p[sel].astype(np.int64), t[sel].astype(np.int64)
    if pv.size == 0:
        raise InputError("no voxels to compare")
    pu, pi = np.unique(pv, return_inverse=True)
    tu, ti = np.unique(tv, return_inverse=True)
    conf = np.zeros((pu.size, tu.size), np.int64)
    np.add.at(conf, (pi, ti), 1)
    r, c = linear_sum_assignment(-conf)
    return float(conf[r, c].sum() / pv.size)
