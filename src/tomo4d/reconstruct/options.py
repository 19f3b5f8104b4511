"""Options and results of :func:`tomo4d.reconstruct.reconstruct` (frozen dataclasses)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._validate import check_int, check_number, show
from ..errors import InputError, check_choice
from ..volume import Volume

#: ring-removal methods: name -> algotom.prep.removal function (``none`` switches it off)
RING_METHODS = ("sorting", "filtering", "normalization", "wavelet", "all", "none")
#: beam geometries: only ``parallel`` has an FBP in the engine on CPU (``cone`` is refused, see CONE_BEAM_MESSAGE)
GEOMETRIES = ("parallel", "cone")

CONE_BEAM_MESSAGE = (
    "geometry='cone' is not supported: the engine, algotom, has parallel-beam reconstruction only (FBP, DFI, BPF; "
    "none for a cone-beam/FDK geometry, on CPU or GPU). Cone-beam (FDK) reconstruction on CPU is in RTK "
    "(pip install itk-rtk, Apache-2.0), on GPU in astra-toolbox (FDK_CUDA, GPL-3) or TIGRE; reconstruct with one of "
    "them and give tomo4d the volume. A lab source far from the sample (cone angle below ~1 degree) can be treated "
    "as parallel: geometry='parallel'")

#: FBP filters: ``ramp`` is the bare ramp (Ram-Lak); the others are algotom's smoothing windows on it
FILTERS = ("ramp", "hann", "hamming", "parzen", "blackman")

# keV * nm: lambda = HC / E
HC_KEV_NM = 1.23984198


@dataclass(frozen=True)
class PaganinOptions:
    """Single-material phase retrieval (Paganin et al. 2002) of each flat-corrected projection.

    The transmission is low-passed by ``1 / (1 + pi * lambda * distance * delta/beta * |u|^2)`` (u in
    cycles per length) before ``-log``; the engine's Fresnel filter applies it.

    Attributes
    ----------
    delta_beta : float
        Ratio of the refractive-index decrement to the absorption index (e.g. 170 for the studies' electrodes).
    energy_kev : float
        Photon energy, keV.
    distance_m : float
        Sample-detector propagation distance, metres.
    """

    delta_beta: float
    energy_kev: float
    distance_m: float

    def __post_init__(self):
        check_number("paganin delta_beta", self.delta_beta, minimum=0.0)
        check_number("paganin energy_kev", self.energy_kev, minimum=0.1)
        check_number("paganin distance_m", self.distance_m, minimum=0.0)

    def ratio(self, pixel_size_nm: float) -> float:
        """The filter's coefficient in (cycles per pixel)^-2: pi * lambda * z * (delta/beta) / pixel^2."""
        wavelength_nm = HC_KEV_NM / self.energy_kev
        return math.pi * wavelength_nm * self.distance_m * 1e9 * self.delta_beta / pixel_size_nm**2


@dataclass(frozen=True)
class ReconstructOptions:
    """How :func:`~tomo4d.reconstruct.reconstruct` turns projections into a volume.

    Attributes
    ----------
    center : float or None
        Rotation axis as a detector column (0-based, sub-pixel); None finds it (algotom's Vo method)
        on the sinograms of ``center_rows`` rows, searching +-``center_search`` columns about the middle.
    center_search : float or None
        Half-width of the centre search in detector columns (default: a quarter of the width).
    rings : str
        Ring (stripe) removal on each transmission sinogram: one of :data:`RING_METHODS` (default none:
        on the striped synthetic scans of benchmarks/RESULTS.md none of algotom's 18 method settings lowered the
        rings without losing more than 0.1 dB of PSNR; ``sorting`` with ``ring_size=5`` is the gentlest,
        rings 0.4-0.9x for 0.4-0.7 dB).
    ring_size : int
        Window of the stripe filter, detector columns (odd).
    filter : str
        FBP filter: one of :data:`FILTERS`.
    paganin : PaganinOptions or None
        Phase retrieval before ``-log``; needs a pixel size.
    pixel_size_nm : float or None
        Detector pixel size at the sample (the voxel size); overrides the file's.
    slab_rows : int
        Detector rows reconstructed at a time: input memory is about
        ``n_projections * (slab_rows + 2 * margin) * width * 4`` bytes.
    allow_missing_flats : bool
        Accept projections without flats or darks, treated as already flat-corrected transmissions.
    min_transmission : float
        Transmissions at or below this (or not finite) are set to it before ``-log`` and counted.
    rows : (int, int) or None
        Detector rows ``[start, stop)`` to reconstruct (default all).
    drift : bool
        Correct a linear drift of the flats and darks: each projection divided by the flat (minus the dark)
        interpolated between those taken before and after it (NXtomo files with flats/darks at both ends).
    uint16_range : (float, float) or None
        Write uint16 instead of float32: ``lo`` -> 0, ``hi`` -> 65535 (attenuation per voxel), values outside
        clipped and counted; the range is kept in the provenance.  Halves the output memory.
    geometry : str
        ``parallel`` (synchrotron, neutrons); ``cone`` is refused with the engines that would support it
        (:data:`CONE_BEAM_MESSAGE`): algotom has no cone-beam reconstruction.
    """

    center: float | None = None
    center_search: float | None = None
    center_rows: int = 3
    rings: str = "none"
    ring_size: int = 21
    filter: str = "ramp"
    paganin: PaganinOptions | None = None
    pixel_size_nm: float | None = None
    slab_rows: int = 32
    allow_missing_flats: bool = False
    min_transmission: float = 1e-6
    rows: tuple[int, int] | None = None
    drift: bool = False
    uint16_range: tuple[float, float] | None = None
    geometry: str = "parallel"

    def __post_init__(self):
        check_choice("geometry", self.geometry, GEOMETRIES)
        if self.geometry == "cone":
            raise InputError(CONE_BEAM_MESSAGE)
        if self.center is not None:
            check_number("center", self.center)
        if self.center_search is not None:
            check_number("center_search", self.center_search, minimum=1.0)
        check_int("center_rows", self.center_rows, minimum=1)
        check_choice("rings", self.rings, RING_METHODS)
        size = check_int("ring_size", self.ring_size, minimum=3)
        if size % 2 == 0:
            raise InputError(f"ring_size={size} must be odd; use {size + 1}")
        check_choice("filter", self.filter, FILTERS)
        if self.paganin is not None and not isinstance(self.paganin, PaganinOptions):
            raise InputError(f"paganin={show(self.paganin)} must be a PaganinOptions(delta_beta, energy_kev, "
                             "distance_m) or None")
        if self.pixel_size_nm is not None:
            check_number("pixel_size_nm", self.pixel_size_nm, minimum=1e-6)
        check_int("slab_rows", self.slab_rows, minimum=1)
        check_number("min_transmission", self.min_transmission, minimum=1e-30, maximum=1.0)
        if self.rows is not None:
            if len(self.rows) != 2 or not 0 <= int(self.rows[0]) < int(self.rows[1]):
                raise InputError(f"rows={show(self.rows)} must be (start, stop) with 0 <= start < stop")
            object.__setattr__(self, "rows", (int(self.rows[0]), int(self.rows[1])))
        if self.uint16_range is not None:
            try:
                lo, hi = (float(v) for v in self.uint16_range)
            except (TypeError, ValueError):
                raise InputError(f"uint16_range={show(self.uint16_range)} must be (lo, hi), attenuation per voxel") \
                    from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise InputError(f"uint16_range={show(self.uint16_range)} must be finite with lo < hi")
            object.__setattr__(self, "uint16_range", (lo, hi))

    def to_dict(self) -> dict:
        """JSON-able parameters (for provenance)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["paganin"] = None if self.paganin is None else dict(vars(self.paganin))
        d["rows"] = None if self.rows is None else list(self.rows)
        d["uint16_range"] = None if self.uint16_range is None else list(self.uint16_range)
        return d


@dataclass(frozen=True)
class Reconstruction:
    """What :func:`~tomo4d.reconstruct.reconstruct` returns.

    Attributes
    ----------
    volume : Volume
        ``(z, y, x)``: z the detector rows, (y, x) the slice; voxel size = pixel size; float32 attenuation
        per voxel (``mu * voxel``; Paganin: the retrieved ``mu * voxel`` of the single material).
    center : float
        Rotation axis used, detector column.
    center_found : bool
        Whether ``center`` was found automatically.
    n_clipped : int
        Transmissions not finite or at/below ``min_transmission`` before ``-log``, set to it (counted, never NaN).
    coverage_deg : float
        Angular range covered (span plus one step).
    engine : str
        ``"algotom <version>"``.
    warnings : tuple of str
        The warnings raised (also issued with :func:`warnings.warn`).
    n_out_of_range : int
        Voxels clipped to ``uint16_range`` (0 for float32 output).
    """

    volume: Volume
    center: float
    center_found: bool
    n_clipped: int
    coverage_deg: float
    engine: str
    warnings: tuple[str, ...] = ()
    n_out_of_range: int = 0

    def summary(self) -> dict:
        return {"shape": list(self.volume.shape), "voxel_size_nm": list(self.volume.voxel_size_nm),
                "center": self.center, "center_found": self.center_found, "n_clipped": self.n_clipped,
                "coverage_deg": self.coverage_deg, "engine": self.engine, "warnings": list(self.warnings),
                "n_out_of_range": self.n_out_of_range}
