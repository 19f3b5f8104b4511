"""Resolution planner for neutron and X-ray imaging of the same cell.

Neutron imaging uses a (nearly) parallel beam from a pinhole of diameter D at a
distance L from the sample: a point of the sample at a distance ``l`` from the
detector is blurred over ``R_n = l / (L/D)``.  Lab/synchrotron cone-beam X-ray
imaging magnifies the sample by ``M = SD / SO`` (source-detector over
source-sample distance), so a detector pixel ``P_x`` covers ``R_x = P_x / M`` in
the sample, while a finite source spot ``s`` adds a penumbra ``s (M - 1) / M``.
Independent blurs add in quadrature.  Consequences for a combined experiment:
the sample goes as close to the neutron detector as its housing allows, and as
close to the X-ray source as its size allows (e.g. reaching 5 um at ``M = 5``
needs an X-ray detector pixel under 25 um).

All lengths: distances in mm, resolutions and pixels in um.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import InputError
from ._checks import positive_float

__all__ = ["neutron_resolution_um", "xray_resolution_um", "NeutronSetup", "XraySetup", "NeutronPlan", "XrayPlan",
           "ResolutionPlan", "plan_resolution", "BEAMLINES", "beamline_setup"]


def _quad(*terms: float) -> float:
    return math.sqrt(sum(t * t for t in terms))


def neutron_resolution_um(*, sample_detector_distance_mm: float, collimation_ratio: float,
                          detector_resolution_um: float = 0.0) -> float:
    """Neutron spatial resolution, um: ``l / (L/D)`` combined in quadrature with the detector's.

    Parameters
    ----------
    sample_detector_distance_mm : float
        ``l``, distance from the sample (its far side) to the detector, mm.
    collimation_ratio : float
        ``L/D``, pinhole-sample distance over pinhole diameter (e.g. 200-2000).
    detector_resolution_um : float
        Intrinsic resolution of the scintillator/camera, um (0: geometric blur only).
    """
    l_mm = positive_float("sample_detector_distance_mm", sample_detector_distance_mm, allow_zero=True)
    ld = positive_float("collimation_ratio", collimation_ratio)
    det = positive_float("detector_resolution_um", detector_resolution_um, allow_zero=True)
    return _quad(l_mm * 1e3 / ld, det)


def xray_resolution_um(*, detector_pixel_um: float, source_sample_distance_mm: float,
                       source_detector_distance_mm: float, source_spot_um: float = 0.0) -> float:
    """Cone-beam X-ray resolution, um: ``P_x / M`` and the spot penumbra ``s (M - 1) / M`` in quadrature.

    Parameters
    ----------
    detector_pixel_um : float
        Detector pixel (or detector resolution) ``P_x``, um.
    source_sample_distance_mm, source_detector_distance_mm : float
        ``SO`` and ``SD``, mm; magnification ``M = SD / SO`` (>= 1).
    source_spot_um : float
        Source (focal spot) size, um (0: ideal point source, e.g. a synchrotron).
    """
    p = positive_float("detector_pixel_um", detector_pixel_um)
    so = positive_float("source_sample_distance_mm", source_sample_distance_mm)
    sd = positive_float("source_detector_distance_mm", source_detector_distance_mm)
    spot = positive_float("source_spot_um", source_spot_um, allow_zero=True)
    if sd < so:
        raise InputError(f"source_detector_distance_mm={sd:g} is smaller than source_sample_distance_mm={so:g}; "
                         "the sample must sit between source and detector (SD >= SO)")
    m = sd / so
    return _quad(p / m, spot * (m - 1.0) / m)


@dataclass(frozen=True)
class NeutronSetup:
    """Neutron beam-line geometry.

    Attributes
    ----------
    collimation_ratio : float
        ``L/D`` (pinhole-sample distance over pinhole diameter).
    sample_detector_distance_mm : float
        Current ``l``, mm.
    min_sample_detector_distance_mm : float
        Closest the sample can get to the detector (cell housing, rotation stage), mm.
    detector_resolution_um : float
        Intrinsic detector resolution, um.
    """

    collimation_ratio: float
    sample_detector_distance_mm: float
    min_sample_detector_distance_mm: float = 0.0
    detector_resolution_um: float = 0.0

    def __post_init__(self):
        positive_float("collimation_ratio", self.collimation_ratio)
        positive_float("sample_detector_distance_mm", self.sample_detector_distance_mm, allow_zero=True)
        positive_float("min_sample_detector_distance_mm", self.min_sample_detector_distance_mm, allow_zero=True)
        positive_float("detector_resolution_um", self.detector_resolution_um, allow_zero=True)
        if self.sample_detector_distance_mm < self.min_sample_detector_distance_mm:
            raise InputError(
                f"sample_detector_distance_mm={self.sample_detector_distance_mm:g} is below "
                f"min_sample_detector_distance_mm={self.min_sample_detector_distance_mm:g}; fix one of them")


@dataclass(frozen=True)
class XraySetup:
    """Cone-beam X-ray geometry.

    Attributes
    ----------
    detector_pixel_um : float
        Detector pixel ``P_x``, um.
    source_sample_distance_mm, source_detector_distance_mm : float
        Current ``SO`` and ``SD``, mm.
    min_source_sample_distance_mm : float
        Closest the sample can get to the source (its radius plus housing), mm.
    source_spot_um : float
        Focal spot size, um.
    """

    detector_pixel_um: float
    source_sample_distance_mm: float
    source_detector_distance_mm: float
    min_source_sample_distance_mm: float = 0.0
    source_spot_um: float = 0.0

    def __post_init__(self):
        positive_float("detector_pixel_um", self.detector_pixel_um)
        positive_float("source_sample_distance_mm", self.source_sample_distance_mm)
        positive_float("source_detector_distance_mm", self.source_detector_distance_mm)
        positive_float("min_source_sample_distance_mm", self.min_source_sample_distance_mm, allow_zero=True)
        positive_float("source_spot_um", self.source_spot_um, allow_zero=True)
        if self.source_detector_distance_mm < self.source_sample_distance_mm:
            raise InputError("source_detector_distance_mm must be >= source_sample_distance_mm (SD >= SO)")
        if self.source_sample_distance_mm < self.min_source_sample_distance_mm:
            raise InputError(
                f"source_sample_distance_mm={self.source_sample_distance_mm:g} is below "
                f"min_source_sample_distance_mm={self.min_source_sample_distance_mm:g}; fix one of them")

    @property
    def magnification(self) -> float:
        """``M = SD / SO``."""
        return self.source_detector_distance_mm / self.source_sample_distance_mm


@dataclass(frozen=True)
class NeutronPlan:
    """What the neutron geometry can reach for a target resolution (lengths in um / mm as named).

    Attributes
    ----------
    target_um, current_resolution_um, best_resolution_um : float
        Asked, obtained now, best possible with the sample at its closest to the detector.
    reachable : bool
        ``best_resolution_um <= target_um``.
    max_sample_detector_distance_mm : float
        Largest ``l`` that meets the target (NaN if the detector alone is too coarse).
    min_collimation_ratio : float
        Smallest ``L/D`` that meets the target with the sample at its closest (NaN as above).
    binding_constraint : str
        What limits the resolution: ``"sample-detector distance"``, ``"collimation ratio"`` or
        ``"detector resolution"``.
    advice : str
        One sentence on what to change.
    """

    target_um: float
    current_resolution_um: float
    best_resolution_um: float
    reachable: bool
    max_sample_detector_distance_mm: float
    min_collimation_ratio: float
    binding_constraint: str
    advice: str


@dataclass(frozen=True)
class XrayPlan:
    """What the X-ray geometry can reach for a target resolution.

    Attributes
    ----------
    target_um, current_resolution_um, best_resolution_um : float
        Asked, obtained now, best possible over magnifications ``1 .. max_magnification``.
    reachable : bool
        ``best_resolution_um <= target_um``.
    magnification, max_magnification : float
        Current ``SD/SO`` and the largest allowed by ``min_source_sample_distance_mm``.
    required_magnification : float
        Smallest ``M`` meeting the target (NaN if unreachable).
    max_source_sample_distance_mm : float
        Largest ``SO`` meeting the target at the current ``SD`` (NaN if unreachable).
    max_detector_pixel_um : float
        Largest detector pixel meeting the target at the current magnification (ignoring the spot);
        e.g. 25 um for 5 um at ``M = 5``.
    binding_constraint : str
        ``"source-sample distance"``, ``"detector pixel"`` or ``"source spot"``.
    advice : str
        One sentence on what to change.
    """

    target_um: float
    current_resolution_um: float
    best_resolution_um: float
    reachable: bool
    magnification: float
    max_magnification: float
    required_magnification: float
    max_source_sample_distance_mm: float
    max_detector_pixel_um: float
    binding_constraint: str
    advice: str


@dataclass(frozen=True)
class ResolutionPlan:
    """Plans for both modalities (either may be None when its geometry was not given)."""

    target_um: float
    neutron: NeutronPlan | None
    xray: XrayPlan | None

    def table_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Rows ``(modality, now um, best um, reachable, binding constraint, advice)``."""
        rows = []
        for name, p in (("neutron", self.neutron), ("x-ray", self.xray)):
            if p is None:
                continue
            rows.append((name, f"{p.current_resolution_um:.3g}", f"{p.best_resolution_um:.3g}",
                         "yes" if p.reachable else "no", p.binding_constraint, p.advice))
        return rows

    @staticmethod
    def header() -> tuple[str, ...]:
        return ("modality", "now (um)", "best (um)", "reachable", "binding constraint", "advice")

    def to_dict(self) -> dict:
        return {"target_um": self.target_um, "neutron": asdict(self.neutron) if self.neutron else None,
                "xray": asdict(self.xray) if self.xray else None}


def _plan_neutron(target: float, g: NeutronSetup) -> NeutronPlan:
    ld, det = g.collimation_ratio, g.detector_resolution_um
    now = neutron_resolution_um(sample_detector_distance_mm=g.sample_detector_distance_mm, collimation_ratio=ld,
                                detector_resolution_um=det)
    lmin = g.min_sample_detector_distance_mm
    best = neutron_resolution_um(sample_detector_distance_mm=lmin, collimation_ratio=ld, detector_resolution_um=det)
    if det >= target:
        return NeutronPlan(target, now, best, False, float("nan"), float("nan"), "detector resolution",
                           f"the detector alone blurs {det:.3g} um >= {target:.3g} um: use a finer scintillator/"
                           "optics")
    geo = math.sqrt(target ** 2 - det ** 2)  # geometric blur allowed, um
    lmax = geo * ld / 1e3
    ld_min = lmin * 1e3 / geo if lmin > 0 else 0.0
    if lmin > lmax:
        return NeutronPlan(target, now, best, False, lmax, ld_min, "collimation ratio",
                           f"the sample cannot get closer than {lmin:.3g} mm; raise L/D from {ld:.4g} to >= "
                           f"{ld_min:.4g} (smaller pinhole, less flux)")
    if now <= target:
        advice = f"met: keep the sample within {lmax:.3g} mm of the detector"
    else:
        advice = f"move the sample from {g.sample_detector_distance_mm:.3g} mm to <= {lmax:.3g} mm from the detector"
    return NeutronPlan(target, now, best, True, lmax, ld_min, "sample-detector distance", advice)


def _xray_res(p: float, spot: float, m: float) -> float:
    return _quad(p / m, spot * (m - 1.0) / m)


def _plan_xray(target: float, g: XraySetup) -> XrayPlan:
    p, spot, sd = g.detector_pixel_um, g.source_spot_um, g.source_detector_distance_mm
    m_now = g.magnification
    m_max = sd / g.min_source_sample_distance_mm if g.min_source_sample_distance_mm > 0 else math.inf
    now = _xray_res(p, spot, m_now)
    m_opt = 1.0 + (p / spot) ** 2 if spot > 0 else math.inf
    m_best = min(m_opt, m_max)
    best = _xray_res(p, spot, m_best) if math.isfinite(m_best) else 0.0
    max_pixel = target * m_now
    # smallest M meeting the target: (p^2 + s^2) u^2 - 2 s^2 u + s^2 - target^2 <= 0, u = 1/M
    a, b, c = p * p + spot * spot, -2 * spot * spot, spot * spot - target * target
    disc = b * b - 4 * a * c
    m_req = float("nan")
    if disc >= 0:
        u_hi = (-b + math.sqrt(disc)) / (2 * a)
        u_lo = (-b - math.sqrt(disc)) / (2 * a)
        if u_hi > 0 and u_lo < 1:
            m_req = max(1.0, 1.0 / min(u_hi, 1.0))
    reachable = best <= target * (1 + 1e-12) and math.isfinite(m_req) and m_req <= m_max * (1 + 1e-12)
    so_max = sd / m_req if reachable else float("nan")
    if reachable:
        binding = "source-sample distance"
        advice = (f"met at M = {m_now:.3g}" if now <= target else
                  f"bring the sample closer to the source: SO <= {so_max:.4g} mm (M >= {m_req:.3g})")
    elif spot > 0 and (m_opt < m_max and _xray_res(p, spot, m_opt) > target
                       or spot * (m_best - 1.0) >= p):  # the penumbra outweighs the pixel at the best M
        binding = "source spot"
        advice = f"the {spot:.3g} um focal spot limits the resolution to {best:.3g} um: use a smaller spot"
    else:
        binding = "detector pixel"
        advice = (f"at the largest magnification M = {m_max:.3g} the pixel must be under {target * m_max:.3g} um "
                  f"(now {p:.3g} um); at M = {m_now:.3g} under {max_pixel:.3g} um")
    return XrayPlan(target, now, best, reachable, m_now, m_max, m_req if reachable else float("nan"), so_max,
                    max_pixel, binding, advice)


def plan_resolution(target_um: float, *, neutron: NeutronSetup | None = None,
                    xray: XraySetup | None = None) -> ResolutionPlan:
    """What a combined neutron/X-ray geometry can resolve, and which constraint binds.

    Parameters
    ----------
    target_um : float
        Wanted spatial resolution, um.
    neutron : NeutronSetup, optional
        Neutron geometry (``R_n = l / (L/D)`` with the detector blur in quadrature).
    xray : XraySetup, optional
        X-ray geometry (``R_x = P_x / M``, ``M = SD / SO``, with the spot penumbra in quadrature).

    Returns
    -------
    ResolutionPlan
        One :class:`NeutronPlan` and/or :class:`XrayPlan`.

    Examples
    --------
    >>> plan = plan_resolution(5.0, xray=XraySetup(detector_pixel_um=50, source_sample_distance_mm=20,
    ...                                             source_detector_distance_mm=100))
    >>> round(plan.xray.max_detector_pixel_um, 6)   # at M = 5 the pixel must be under 25 um
    25.0
    """
    target = positive_float("target_um", target_um)
    if neutron is None and xray is None:
        raise InputError("plan_resolution needs a geometry: give neutron=NeutronSetup(...) and/or xray=XraySetup(...)")
    if neutron is not None and not isinstance(neutron, NeutronSetup):
        raise InputError(f"neutron={neutron!r} must be a NeutronSetup")
    if xray is not None and not isinstance(xray, XraySetup):
        raise InputError(f"xray={xray!r} must be an XraySetup")
    return ResolutionPlan(target, _plan_neutron(target, neutron) if neutron else None,
                          _plan_xray(target, xray) if xray else None)


#: Nominal geometries of the beamlines this toolkit is used at, for planning without measured values.
#: They are round, typical settings (not certified instrument data): give your own set-up for real planning.
#: ``next``: ILL NeXT (Grenoble), neutron pinhole camera with L/D 333 (30 mm pinhole at 10 m; smaller pinholes
#: raise it), sample 20 mm (at best 10 mm) from a fine scintillator of 10 um resolution, and its cone-beam X-ray
#: line, 127 um flat-panel pixel, SD 1200 mm, SO 200 mm (at best 20 mm), 5 um focal spot.
#: ``odin``: ESS ODIN, L/D 1000 (10 mm pinhole at 10 m), sample 20 mm (at best 10 mm) from a detector of 20 um
#: resolution; no X-ray line.
BEAMLINES = {
    "next": (dict(collimation_ratio=333.0, sample_detector_distance_mm=20.0, min_sample_detector_distance_mm=10.0,
                  detector_resolution_um=10.0),
             dict(detector_pixel_um=127.0, source_sample_distance_mm=200.0, source_detector_distance_mm=1200.0,
                  min_source_sample_distance_mm=20.0, source_spot_um=5.0)),
    "odin": (dict(collimation_ratio=1000.0, sample_detector_distance_mm=20.0, min_sample_detector_distance_mm=10.0,
                  detector_resolution_um=20.0), None),
}


def beamline_setup(name: str) -> tuple[NeutronSetup | None, XraySetup | None]:
    """The nominal neutron and X-ray geometries of a beamline in :data:`BEAMLINES` (``"next"``, ``"odin"``).

    Returns ``(NeutronSetup, XraySetup or None)``; see :data:`BEAMLINES` for the values and their origin.
    """
    key = str(name).strip().lower()
    if key not in BEAMLINES:
        raise InputError(f"beamline={name!r} is not known; choose one of {', '.join(sorted(BEAMLINES))} "
                         "or give the geometry (NeutronSetup / XraySetup)")
    n, x = BEAMLINES[key]
    return NeutronSetup(**n), (XraySetup(**x) if x is not None else None)
