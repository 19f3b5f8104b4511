"""Options of the local correlation, grouped in frozen, validated objects.

:class:`CorrelationOptions` holds what a correlation does at every node (model,
iterations, screening, post-processing, backend); :class:`GreyModel` how a
window's grey levels may differ between the states (its ``grey_model``);
:class:`PsfCompensation` the optional blur compensation at large strain
(:mod:`tomo4d.dvc.psf`).  All check every value when they are built, so a bad
option is refused (with its name, its value and the fix) before any work
starts.  A new option is a new field here, validated in ``__post_init__``.

:func:`resolve_options` turns the keyword shortcuts of :func:`~tomo4d.dvc.correlate`
(``order=1``, ``grey_model="znssd"``, ``psf_sigma_px=2.8``, ...) into these objects.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

import numpy as np

from .._validate import check_int, check_number, show
from ..errors import InputError

__all__ = ["CorrelationOptions", "GreyModel", "PsfCompensation", "BACKENDS", "GREY_MODELS"]

#: Gauss-Newton implementations (``auto``: torch on a CUDA GPU when available, else numba)
BACKENDS = ("auto", "numba", "torch")
#: names of the grey-level models of the matching criterion (:class:`GreyModel`): ``ssd`` plain sum of squared
#: differences, ``zssd`` zero-mean (brightness), ``nssd`` normalised (contrast about zero), ``znssd`` both
GREY_MODELS = ("ssd", "zssd", "nssd", "znssd")


def _check_bool(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name}={show(value)} is not True or False; give a boolean")
    return bool(value)


@dataclass(frozen=True)
class GreyModel:
    """How the grey levels of a correlation window may differ between the reference and the deformed state.

    At every iteration the warped deformed window ``g`` is mapped onto the reference window ``f``
    before the two are compared (Pan et al. 2010, "Equivalence of digital image correlation criteria"):

    ========  ======  =====  ====================================================================
    name      offset  scale  compared
    ========  ======  =====  ====================================================================
    ssd       no      no     ``g - f``
    zssd      yes     no     ``(g - mean g) - (f - mean f)``: a brightness change
    nssd      no      yes    ``g rms f / rms g - f`` (rms about zero): attenuation scaled, e.g.
                             lithiated silicon losing X-ray attenuation in scans whose zero is
                             the attenuation's (1/cm, or a [0, 1] range with air at 0)
    znssd     yes     yes    ``(g - mean g) std f / std g - (f - mean f)``: brightness and contrast
    ========  ======  =====  ====================================================================

    Every model keeps the reference's constant Jacobian, so it costs one extra pass over the
    window per iteration (none for ``ssd``).  Measured on the snow volume under five grey-level
    changes and on the HQ phantom's T1-T3, ``znssd`` read as well as or better than the restricted
    models in every case, even on the change each restricted model names, at 2 % and 15 % noise
    (benchmarks/RESULTS.md, session 33): use ``znssd`` whenever the grey levels change; ``zssd``
    and ``nssd`` serve comparison with other codes' criteria (``nssd`` only where the grey zero is
    the attenuation's).

    Build one with ``GreyModel(offset=True, scale=True)`` or ``GreyModel.named("znssd")``; every
    option that takes a grey model also takes the name.

    Attributes
    ----------
    offset : bool
        The windows' mean grey levels may differ (brightness).
    scale : bool
        The windows' grey levels may be scaled: about their means with ``offset``, about zero
        without (contrast).
    """

    offset: bool = False
    scale: bool = False

    def __post_init__(self):
        object.__setattr__(self, "offset", _check_bool("grey_model.offset", self.offset))
        object.__setattr__(self, "scale", _check_bool("grey_model.scale", self.scale))

    @classmethod
    def named(cls, name) -> GreyModel:
        """The model called ``name`` (one of :data:`GREY_MODELS`); a :class:`GreyModel` is returned as it is."""
        if isinstance(name, GreyModel):
            return name
        if not isinstance(name, str) or name not in GREY_MODELS:
            raise InputError(f"grey_model={show(name)}: use one of {show(GREY_MODELS)} (\"ssd\": sum of squared "
                             "differences, \"znssd\": brightness and contrast may change) or a GreyModel")
        return cls(offset=name in ("zssd", "znssd"), scale=name in ("nssd", "znssd"))

    @property
    def name(self) -> str:
        """The model's name in :data:`GREY_MODELS` (for files, reports and the command line)."""
        return GREY_MODELS[self.code]

    @property
    def code(self) -> int:
        """The kernels' integer code: 0 ssd, 1 zssd, 2 nssd, 3 znssd (bit 0 offset, bit 1 scale)."""
        return int(self.offset) + 2 * int(self.scale)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class CorrelationOptions:
    """How every node of a level is correlated; all values checked on construction.

    Attributes
    ----------
    order : {3, 1}
        Interpolation of the deformed volume: 3 (cubic B-spline) or 1 (linear).
    max_iterations : int
        Gauss-Newton iterations per node (>= 1).
    tolerance_px : float
        Convergence when an update moves the window by less than this, px (> 0).
    min_texture : float
        Skip windows whose grey-level standard deviation is below this fraction
        of the whole reference's (``LOW_TEXTURE``).
    mask_fraction : float
        Minimum fraction of window voxels inside the mask (0..1; ``OUTSIDE_MASK``).
    max_displacement_px : float, optional
        A node moving farther than this from its initial guess is ``DIVERGED``;
        default (None) the half-window.
    out_of_view_fraction : float
        A node whose warped window has more than this fraction of its (masked)
        voxels outside the deformed volume when it stops is ``OUT_OF_VIEW``
        (0..1, default 0.05: about one window face of 21 voxels).  Such nodes
        measured only part of their window, next to the volume edge where the
        deformed scan holds no data (the sample swelled out of the scanned
        region); they are never replaced by interpolation nor used for strain.
    replace : bool
        Flag outliers and replace non-converged/diverged/outlier nodes by
        interpolation from converged neighbours (``INTERPOLATED``).
    outlier_threshold : float
        Normalised median test threshold (see :func:`~tomo4d.dvc.flag_outliers`); 0 disables.
    switch_px : float
        With ``order=3``, iterate with linear interpolation until an update is
        smaller than this, px, then with cubic B-splines; 0: cubic only.
    curvature_correction : bool
        Remove the second-order bias of affine windows on curved fields
        (see :func:`~tomo4d.dvc.correct_curvature`).
    smooth_sigma_px : float
        Gaussian pre-smoothing of both volumes, px (0: none; ~1 for noisy scans).
    grey_model : GreyModel or {"ssd", "zssd", "nssd", "znssd"}
        Matching criterion (:class:`GreyModel`; a name is turned into the model):
        ``"ssd"``, the sum of squared grey-level differences; ``"znssd"``, zero-mean
        normalised SSD: each warped window's brightness and contrast are mapped onto
        the reference window's at every iteration, so a grey-level change between
        the states (lithiated silicon losing X-ray attenuation) does not bias the
        warp; ``"zssd"`` brightness only, ``"nssd"`` contrast about zero only.
        Relit texture (contrast 1 -> 0.55 through z, 8 % stretch): median error
        0.009 px against SSD's 0.046; default 96^3 phantom, T1-T3: mean Hencky
        strain of each anode half within 0.02 of the truth where SSD misses by up
        to 0.035 (benchmarks/RESULTS.md, "DVC at battery expansions"; convergence
        at larger SoC is still the open problem).
    backend : {"auto", "numba", "torch"}
        Per-node Gauss-Newton implementation (``auto``: torch when it is
        installed and a CUDA GPU is available, else numba).
    device : str or torch.device, optional
        Torch device, only with the torch backend (checked when the
        correlation starts, so that building options never imports torch).
    threads : int, optional
        Numba threads for the call (default: ``tomo4d.threads``, else the CPUs this process may use;
        restored afterwards).
    chunk_budget_mb : float
        Working memory of one batch of nodes, MiB (> 0): the node grid is cut into
        blocks whose box of the volumes (windows, their images, search and
        interpolation reach) costs at most this (about 40 bytes per voxel of the
        box); volumes given lazily (dask, Zarr, HDF5) are only read box by box.
        Results equal the whole-volume solution (B-spline coefficients to float32
        rounding).  Default 1024 MiB: a 512^3 pair correlates in one or a few batches.
    """

    order: int = 3
    max_iterations: int = 50
    tolerance_px: float = 1e-3
    min_texture: float = 0.02
    mask_fraction: float = 0.5
    max_displacement_px: float | None = None
    out_of_view_fraction: float = 0.05
    replace: bool = True
    outlier_threshold: float = 3.0
    switch_px: float = 0.05
    curvature_correction: bool = True
    smooth_sigma_px: float = 0.0
    grey_model: GreyModel | str = GreyModel()
    backend: str = "auto"
    device: object = None
    threads: int | None = None
    chunk_budget_mb: float = 1024.0

    def __post_init__(self):
        if self.order not in (1, 3) or isinstance(self.order, (bool, np.bool_)):
            raise InputError(f"order={show(self.order)}: use 1 (linear) or 3 (cubic)")
        checked = {
            "order": int(self.order),
            "max_iterations": check_int("max_iterations", self.max_iterations, minimum=1),
            "tolerance_px": check_number("tolerance_px", self.tolerance_px, minimum=0.0, exclusive_minimum=True),
            "min_texture": check_number("min_texture", self.min_texture, minimum=0.0),
            "mask_fraction": check_number("mask_fraction", self.mask_fraction, minimum=0.0, maximum=1.0),
            "out_of_view_fraction": check_number("out_of_view_fraction", self.out_of_view_fraction, minimum=0.0,
                                                 maximum=1.0),
            "replace": _check_bool("replace", self.replace),
            "outlier_threshold": check_number("outlier_threshold", self.outlier_threshold, minimum=0.0),
            "switch_px": check_number("switch_px", self.switch_px, minimum=0.0),
            "curvature_correction": _check_bool("curvature_correction", self.curvature_correction),
            "smooth_sigma_px": check_number("smooth_sigma_px", self.smooth_sigma_px, minimum=0.0),
            "chunk_budget_mb": check_number("chunk_budget_mb", self.chunk_budget_mb, minimum=0.0,
                                            exclusive_minimum=True),
        }
        if self.max_displacement_px is not None:
            checked["max_displacement_px"] = check_number("max_displacement_px", self.max_displacement_px,
                                                          minimum=0.0, exclusive_minimum=True)
        if self.threads is not None:
            checked["threads"] = check_int("threads", self.threads, minimum=1)
        checked["grey_model"] = GreyModel.named(self.grey_model)
        if self.backend not in BACKENDS:
            raise InputError(f"backend={show(self.backend)}: use 'auto', 'numba' or 'torch'")
        if self.device is not None and self.backend == "numba":
            raise InputError(f"device={show(self.device)} needs backend='torch' (the numba backend runs on the CPU)")
        for name, value in checked.items():      # normalised types (e.g. numpy scalars -> float), same values
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class PsfCompensation:
    """Compensation of the scanner's blur at large strain (see :mod:`tomo4d.dvc.psf`).

    Attributes
    ----------
    psf_sigma_px : float or (3,) float
        Gaussian point-spread function of the scans, px (one sigma or
        ``(z, y, x)``, each >= 0), e.g. the scanner's blur sigma / voxel size
        (140 nm / 50 nm = 2.8).  Stored as three floats.
    passes : int
        Compensated passes (>= 1; each re-estimates the blurs from the latest F).
    tolerance_px2 : float
        Nodes whose compensating covariances agree to this, px^2 (> 0), share
        one pair of blurred volumes.
    """

    psf_sigma_px: tuple[float, float, float]
    passes: int = 1
    tolerance_px2: float = 0.1

    def __post_init__(self):
        s = self.psf_sigma_px
        try:
            arr = np.asarray(s, dtype=float)
        except (TypeError, ValueError):
            arr = np.zeros(0)
        if isinstance(s, (str, bytes, bool, np.bool_)) or (arr.ndim == 1 and any(
                isinstance(v, (str, bytes, bool, np.bool_)) for v in s)):
            arr = np.zeros(0)
        if arr.ndim == 0:
            arr = np.repeat(arr, 3)
        if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise InputError(f"psf_sigma_px={show(s)} must be one sigma or (z, y, x) sigmas >= 0 in px, e.g. the "
                             "scan's Gaussian PSF sigma / voxel size (140 nm / 50 nm = 2.8)")
        object.__setattr__(self, "psf_sigma_px", tuple(float(v) for v in arr))
        object.__setattr__(self, "passes", check_int("psf_passes", self.passes, minimum=1))
        object.__setattr__(self, "tolerance_px2", check_number("psf_tolerance_px2", self.tolerance_px2,
                                                               minimum=0.0, exclusive_minimum=True))


#: keyword shortcuts of correlate() for the fields of PsfCompensation
_PSF_SHORTCUTS = {"psf_sigma_px": "psf_sigma_px", "psf_passes": "passes", "psf_tolerance_px2": "tolerance_px2"}


def resolve_options(options, psf, shortcuts: dict) -> tuple[CorrelationOptions, PsfCompensation | None]:
    """The options of one call from an options object, a PSF object and keyword shortcuts.

    A shortcut sets one field (``order=1`` is ``CorrelationOptions(order=1)``;
    ``psf_sigma_px``, ``psf_passes``, ``psf_tolerance_px2`` set :class:`PsfCompensation`).
    Refused: an unknown name, a shortcut for a field that a given ``options`` holds with
    another value (or any PSF shortcut next to ``psf``), and PSF settings without ``psf_sigma_px``.
    """
    given = options is not None
    if options is None:
        options = CorrelationOptions()
    elif not isinstance(options, CorrelationOptions):
        raise InputError(f"options={show(options)} is not a CorrelationOptions; give e.g. "
                         "options=CorrelationOptions(order=1)")
    if psf is not None and not isinstance(psf, PsfCompensation):
        raise InputError(f"psf={show(psf)} is not a PsfCompensation; give e.g. psf=PsfCompensation(2.8)")
    names = {f.name for f in dataclasses.fields(CorrelationOptions)}
    unknown = [k for k in shortcuts if k not in names and k not in _PSF_SHORTCUTS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(names | set(_PSF_SHORTCUTS)), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InputError(f"{unknown[0]!r} is not an option of the correlation; {hint}the options are the fields "
                         "of CorrelationOptions and PsfCompensation (psf_sigma_px, psf_passes, psf_tolerance_px2)")
    opt_changes = {k: v for k, v in shortcuts.items() if k in names}
    if "grey_model" in opt_changes:                     # a name compares equal to the model it names
        opt_changes["grey_model"] = GreyModel.named(opt_changes["grey_model"])
    if given:
        for k, v in opt_changes.items():
            if not _same(v, getattr(options, k)):
                raise InputError(f"{k} is given both as a keyword ({k}={show(v)}) and in options ({k}="
                                 f"{show(getattr(options, k))}); give it in one place only")
    if opt_changes:
        options = dataclasses.replace(options, **opt_changes)
    psf_changes = {_PSF_SHORTCUTS[k]: v for k, v in shortcuts.items() if k in _PSF_SHORTCUTS}
    if psf_changes.get("psf_sigma_px", 0) is None:       # psf_sigma_px=None: no compensation
        del psf_changes["psf_sigma_px"]
        if psf_changes:
            raise InputError(f"{', '.join(k for k in shortcuts if k in ('psf_passes', 'psf_tolerance_px2'))} "
                             "given without psf_sigma_px; give psf_sigma_px (the scans' PSF sigma, px) or drop them")
    if psf_changes:
        if psf is not None:
            k = next(k for k in shortcuts if k in _PSF_SHORTCUTS)
            raise InputError(f"{k} is given both as a keyword and through psf=PsfCompensation(...); give the PSF "
                             "settings in one place only")
        if "psf_sigma_px" not in psf_changes:
            raise InputError(f"{', '.join(k for k in shortcuts if k in _PSF_SHORTCUTS)} given without psf_sigma_px; "
                             "give psf_sigma_px (the scans' PSF sigma, px) or drop them")
        psf = PsfCompensation(**psf_changes)
    return options, psf


def _same(a, b) -> bool:
    """Whether a shortcut's value equals the one already in the options (then there is no conflict)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False
