"""The InDI step count chosen by validation: a sweep over N on the held-out slices of the training pair.

Training ends with :func:`validation_sweep`: for every N of ``TrainConfig.sweep_steps`` the model
restores the held-out validation slices of the pair, and the output is judged

* against HQ: PSNR (dB, HQ's robust 0.1-99.9 percentile range), mean SSIM, and edge FWHM *paired with HQ*:
  the edges are detected once, in HQ (automatic edges of :func:`tomo4d.quality.edge_resolution`; on a 3D
  pair in the volume, so boundaries tilted more than 15 degrees out of the slice are left out, as in
  :func:`~tomo4d.enhance.evaluate`), and every image is measured along the same profile lines.  Per N the
  sweep stores the mean FWHM over the edges measured in both (``fwhm_nm``) and the median per-edge ratio
  output / HQ (``fwhm_ratio``: 1 = as sharp as HQ on the same edges, < 1 sharper than HQ).  Detecting edges
  in each image on its own compared different edge sets (session 12: on the phantom a 2D detection on the
  validation slices read InDI sharper than HQ by 7-18 % where, edge for edge, N = 1 is 0.97 x HQ).  When HQ
  has fewer than 5 measurable edges with the default options (e.g. pixel-sharp thin layers) the detection
  uses :data:`~tomo4d.enhance.sweep_edges.THIN_EDGES`, recorded in ``hq["edge_options"]``;
* fine detail against HQ (``detail_power``): the power of the output at the spatial frequencies the LQ grid
  cannot hold (in-plane radial frequency between LQ's Nyquist, 1/4 cycle per HQ pixel, and HQ's, 1/2),
  relative to HQ's power there, over the validation slices (each slice minus its mean, under a smooth taper of
  the valid mask and a Hann window).  1 = as much fine structure as HQ (signal and noise together: what a
  sampler of HQ's distribution produces); the one-step (regression) output sits far below 1, every further
  step restores detail, too many steps add more than HQ holds.  Unlike the edge FWHM it does not depend on
  which kind of edge the held-out slices happen to hold (session 16: on the phantom they hold only collector
  edges, where N = 1 already matches HQ's width while the silicon edges of the test slices are blurrier than
  HQ's at every N);
* against LQ (data consistency): the output degraded back with the LQ forward model (Gaussian blur of the
  pair's estimated sigma, 2x2 in-plane binning, the model's intensity maps) minus the LQ input
  (itself binned 2x2 from the pair's up-sampled LQ on the HQ grid), in units of the LQ noise
  ``sigma_n``: the robust standard deviation (1.4826 MAD) of the same residual for HQ itself (noise
  plus forward-model mismatch: the level the truth reaches).  Its median offset is removed from every
  residual (calibration of the forward model's offset).  Reported as the RMS residual / sigma_n and as
  the fraction of LQ pixels whose residual exceeds ``3 sigma_n`` (HQ: ~0.3 % for Gaussian noise).

The whole curve is stored in the model folder (``step_sweep.json``) with the bicubic and HQ
reference values, and N is recommended by one of three rules (``TrainConfig.step_rule``):

``distortion``
    the N of the highest PSNR (fewest steps among equals).
``sharpness``
    among the N within 1 dB of the best PSNR, the one whose fine detail is closest to HQ's
    (``detail_power`` closest to 1 in log terms).
``balanced`` (default)
    among the N within 0.5 dB of the best PSNR whose inconsistent fraction is within 1 percentage
    point of the lowest, the one whose fine detail is closest to HQ's.

Ties go to fewer steps.  Sweeps stored before ``detail_power`` (session 16) judge closeness to HQ by the paired
edge ratio ``fwhm_ratio`` (older still: the mean FWHM); where neither could be measured, ``sharpness`` and
``balanced`` fall back to ``distortion``.  A model folder without the sweep (trained before it existed) uses its stored
``recommended_steps`` (the old default: the training ``val_steps``, 8) and says so with a warning.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError, check_choice
from .sweep_edges import hq_edge_lines, paired_fwhm

RULES = ("distortion", "sharpness", "balanced")
SWEEP_FILE = "step_sweep.json"
#: default step counts of the sweep
DEFAULT_SWEEP = (1, 2, 3, 4, 6, 8, 12, 16)
MAX_SWEEP_STEPS = 50
#: residuals beyond this many sigma_n count as inconsistent with the LQ input
CONSISTENCY_SIGMAS = 3.0


@dataclass(frozen=True)
class StepSweep:
    """Quality against the number of InDI steps on the held-out slices of the training pair.

    Attributes
    ----------
    steps : tuple of int
        Step counts tried.
    psnr_db, ssim, fwhm_nm : tuple of float
        Against HQ for each N (FWHM: mean edge FWHM, nm; NaN where too few edges were measurable).
    consistency_rms : tuple of float
        RMS residual of the degraded-back output against the LQ input, in units of ``lq_noise``.
    inconsistent_fraction : tuple of float
        Fraction of LQ pixels whose residual exceeds ``3 lq_noise``.
    bicubic, hq : dict
        The same metrics of bicubic up-sampling and of HQ itself (``psnr_db``, ``ssim``, ``fwhm_nm``,
        ``consistency_rms``, ``inconsistent_fraction``; HQ's PSNR/SSIM are inf/1).
    lq_noise : float
        ``sigma_n`` in LQ grey values.
    slices : tuple of int
        Slices of the pair used (validation slices).
    rule : str
        Rule of ``recommended_steps``.
    recommended_steps : int
        N by ``rule``.
    recommended : dict
        N by every rule.
    consistency_projection : bool
        Whether the outputs were projected onto the LQ constraint (``consistency=True``).
    fwhm_ratio : tuple of float
        Median per-edge FWHM ratio output / HQ on HQ's edges for each N (empty in sweeps stored before it).
    detail_power : tuple of float
        Power beyond LQ's Nyquist relative to HQ's for each N (module docstring; empty in sweeps stored
        before it).
    """

    steps: tuple[int, ...]
    psnr_db: tuple[float, ...]
    ssim: tuple[float, ...]
    fwhm_nm: tuple[float, ...]
    consistency_rms: tuple[float, ...]
    inconsistent_fraction: tuple[float, ...]
    bicubic: dict
    hq: dict
    lq_noise: float
    slices: tuple[int, ...]
    rule: str
    recommended_steps: int
    recommended: dict
    consistency_projection: bool = False
    fwhm_ratio: tuple[float, ...] = ()
    detail_power: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=float, allow_nan=True))

    @classmethod
    def from_dict(cls, d: dict, *, where: str = SWEEP_FILE) -> StepSweep:
        if not isinstance(d, dict):
            raise FormatError(f"{where} holds no step sweep object; delete it and rerun 'tomo4d enhance train'")
        try:
            kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
            for k in ("steps", "slices"):
                kw[k] = tuple(int(v) for v in kw[k])
            for k in ("psnr_db", "ssim", "fwhm_nm", "consistency_rms", "inconsistent_fraction", "fwhm_ratio",
                      "detail_power"):
                if k in kw:
                    kw[k] = tuple(float("nan") if v is None else float(v) for v in kw[k])
            out = cls(**kw)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{where} is not a complete step sweep ({type(exc).__name__}: {exc}); delete it and "
                              "rerun 'tomo4d enhance train' (or use --steps)") from None
        n = len(out.steps)
        if not n or any(len(getattr(out, k)) != n for k in ("psnr_db", "ssim", "fwhm_nm", "consistency_rms",
                                                             "inconsistent_fraction")) \
                or len(out.fwhm_ratio) not in (0, n) or len(out.detail_power) not in (0, n):
            raise FormatError(f"{where}: the curves do not have one value per step count; delete it and rerun "
                              "'tomo4d enhance train'")
        return out

    def steps_for(self, rule: str | None = None) -> int:
        """The recommended N by ``rule`` (default: the rule chosen at training)."""
        if rule is None:
            return int(self.recommended_steps)
        check_choice("rule", rule, RULES)
        return int(self.recommended.get(rule, recommend(self, rule)))

    def rows(self) -> list[tuple]:
        """One row per N: steps, PSNR, SSIM, FWHM, consistency RMS, inconsistent %."""
        return [(n, p, s, f, c, 100 * q) for n, p, s, f, c, q in zip(
            self.steps, self.psnr_db, self.ssim, self.fwhm_nm, self.consistency_rms, self.inconsistent_fraction)]


def check_sweep_steps(steps, name: str = "sweep_steps") -> tuple[int, ...]:
    """Step counts of a sweep: whole numbers in 1..50, at least one (sorted, unique)."""
    from .._validate import check_int, show

    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__iter__"):
        raise InputError(f"{name}={show(steps)} is not a sequence; give step counts in 1..{MAX_SWEEP_STEPS}, "
                         "e.g. (1, 2, 4, 8)")
    out = tuple(sorted({check_int(f"{name}[{i}]", s, minimum=1) for i, s in enumerate(steps)}))
    if not out:
        raise InputError(f"{name} is empty; give step counts in 1..{MAX_SWEEP_STEPS} to try, e.g. (1, 2, 4, 8)")
    if out[-1] > MAX_SWEEP_STEPS:
        raise InputError(f"{name} reaches {out[-1]} steps, outside 1..{MAX_SWEEP_STEPS}; InDI gains nothing from "
                         f"more steps and each costs one network pass: sweep at most {MAX_SWEEP_STEPS}")
    return out


def _closest_to_hq(sw: StepSweep, cands: list[int]) -> int | None:
    """Among ``cands``, the N whose fine detail (older sweeps: edges) is closest to HQ's; None if unmeasured."""
    for ratio in (np.asarray(sw.detail_power, float), np.asarray(sw.fwhm_ratio, float)):
        if ratio.size and np.isfinite(ratio).any():   # module docstring
            ok = [i for i in cands if np.isfinite(ratio[i]) and ratio[i] > 0]
            return min(ok, key=lambda i: (abs(math.log(ratio[i])), sw.steps[i])) if ok else None
    ref = sw.hq.get("fwhm_nm", float("nan"))
    ok = [i for i in cands if math.isfinite(sw.fwhm_nm[i])]
    if not ok or not math.isfinite(ref):
        return None
    return min(ok, key=lambda i: (abs(sw.fwhm_nm[i] - ref), sw.steps[i]))


def recommend(sw: StepSweep, rule: str = "balanced") -> int:
    """N recommended by ``rule`` (see the module docstring)."""
    check_choice("rule", rule, RULES)
    ps = np.asarray(sw.psnr_db, float)
    best = int(np.nanargmax(ps)) if np.isfinite(ps).any() else 0
    if rule == "distortion":
        return int(sw.steps[best])
    if rule == "sharpness":
        cands = [i for i, p in enumerate(ps) if p >= ps[best] - 1.0]
    else:
        frac = np.asarray(sw.inconsistent_fraction, float)
        lo = np.nanmin(frac) if np.isfinite(frac).any() else np.nan
        cands = [i for i, p in enumerate(ps) if p >= ps[best] - 0.5 and not (frac[i] > lo + 0.01)]
    i = _closest_to_hq(sw, cands or [best])
    return int(sw.steps[best if i is None else i])


def save_sweep(sw: StepSweep, model_dir) -> Path:
    from .model import _write_json

    p = Path(model_dir) / SWEEP_FILE
    _write_json(p, sw.to_dict())
    return p


def load_sweep(model_dir) -> StepSweep | None:
    """The sweep stored in ``model_dir`` (None when the folder has none: a model from before the sweep)."""
    from .model import read_json

    p = Path(model_dir) / SWEEP_FILE
    if not p.is_file():
        return None
    return StepSweep.from_dict(read_json(p, what="step sweep", fix="delete it and rerun 'tomo4d enhance train'"),
                               where=repr(str(p)))


def model_steps(model, steps=None, rule: str | None = None) -> tuple[int, str]:
    """(N, where it came from): ``steps`` when given, else the model's sweep by ``rule``, else (older model
    folders without a sweep) the stored ``recommended_steps`` with a warning."""
    from .._validate import check_int

    if steps is not None:
        return check_int("steps", steps, minimum=1), "given"
    if rule is not None:
        check_choice("rule", rule, RULES)
    sw = getattr(model, "sweep", None)
    if sw is not None:
        r = rule or sw.rule
        return sw.steps_for(r), f"validation sweep, rule {r}"
    n = int(model.info.recommended_steps)
    if not model.one_step:
        warnings.warn(f"model {model.name} has no step sweep ({SWEEP_FILE}; trained before tomo4d chose N by "
                      f"validation): using its stored default of {n} InDI steps. Retrain it, or give steps "
                      "(--steps) chosen with 'tomo4d enhance sweep'", UserWarning, stacklevel=3)
    return n, "stored default (no validation sweep)"


# -- the sweep ------------------------------------------------------------------------------------

def bin2(a: np.ndarray) -> np.ndarray:
    """2x2 in-plane mean of a (S, Y, X) stack (odd last row/column dropped): the LQ grid of the HQ grid."""
    s, y, x = a.shape
    return a[:, : y // 2 * 2, : x // 2 * 2].reshape(s, y // 2, 2, x // 2, 2).mean((2, 4))


def degrade_slices(hq_units: np.ndarray, model) -> np.ndarray:
    """The LQ forward model, in plane: HQ units -> blur (the pair's sigma) -> 2x2 binning -> LQ units."""
    from scipy import ndimage

    info = model.info
    sigma = float(info.provenance.get("degradation_sigma_px", 1.0))
    a = info.hq_scaling.forward(hq_units).astype(np.float64)
    if sigma > 0:
        a = ndimage.gaussian_filter(a, (0, sigma, sigma))
    return info.lq_scaling.inverse(bin2(a)).astype(np.float64)


def project_onto_lq(hq_units: np.ndarray, lq: np.ndarray, model, *, iterations: int = 10) -> np.ndarray:
    """Consistency step after sampling: move the output towards ``degrade_slices(x) == lq``.

    Landweber iterations in the model's normalised units, ``x += G(rep2(lq - bin2(G(x))))`` (G: the
    pair's Gaussian blur, rep2: 2x2 replication, step 4 A^T with A = bin2 G, stable since ||A||^2 <= 1/4):
    what the LQ measured is restored, the detail it cannot see is left to the network.
    """
    from scipy import ndimage

    info = model.info
    sigma = float(info.provenance.get("degradation_sigma_px", 1.0))
    x = info.hq_scaling.forward(hq_units).astype(np.float64)
    yn = info.lq_scaling.forward(lq).astype(np.float64)
    s, ny, nx = yn.shape

    def blur(a):
        return ndimage.gaussian_filter(a, (0, sigma, sigma)) if sigma > 0 else a

    for _ in range(int(iterations)):
        r = yn - bin2(blur(x))[:, :ny, :nx]
        up = np.repeat(np.repeat(r, 2, axis=1), 2, axis=2)
        full = np.zeros_like(x)
        full[:, : up.shape[1], : up.shape[2]] = up
        x = x + blur(full)
    return info.hq_scaling.inverse(x.astype(np.float32))


#: in-plane radial frequency band (cycles per HQ pixel) of ``detail_power``: beyond LQ's Nyquist, up to HQ's
DETAIL_BAND = (0.25, 0.5)


def detail_taper(mask: np.ndarray, *, ramp_px: float = 8.0) -> np.ndarray:
    """Per-slice weights of the detail power: a 2D Hann window times a raised-cosine ramp from 0 at the valid
    mask's border to 1 at ``ramp_px`` inside it, so that neither the image's edges nor the mask's cut add
    detail of their own."""
    from scipy import ndimage

    s, ny, nx = mask.shape
    out = np.empty(mask.shape, np.float64)
    for k in range(s):
        m = mask[k].astype(bool)
        d = ndimage.distance_transform_edt(m) if not m.all() else np.full(m.shape, ramp_px)
        out[k] = 0.5 - 0.5 * np.cos(np.pi * np.minimum(d / ramp_px, 1.0))
    return out * np.outer(np.hanning(ny), np.hanning(nx))[None]


def detail_power(img: np.ndarray, taper: np.ndarray) -> float:
    """Summed power of a (S, Y, X) stack in :data:`DETAIL_BAND` (each slice minus its weighted mean, times
    ``taper``).  Compare two images through the ratio of their powers under the same taper."""
    s, ny, nx = img.shape
    r = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.rfftfreq(nx)[None, :])
    band = (r >= DETAIL_BAND[0]) & (r < DETAIL_BAND[1])
    total = 0.0
    for k in range(s):
        w = taper[k]
        a = img[k].astype(np.float64)
        a = (a - np.sum(a * w) / max(np.sum(w), 1e-12)) * w
        total += float(np.sum(np.abs(np.fft.rfft2(a))[band] ** 2))
    return total


class _Judge:
    """Metrics of an image stack against HQ and (data consistency) against the LQ input."""

    def __init__(self, model, ref, lq_up, mask, vs, *, volume=None, volume_mask=None, slices=None):
        from ..quality import psnr  # noqa: F401  (imported here: the quality package loads lazily)

        self.model, self.ref, self.mask, self.vs = model, ref, mask, vs
        self.range = float(np.percentile(ref[mask], 99.9) - np.percentile(ref[mask], 0.1)) if mask.any() else 1.0
        self.y = bin2(lq_up.astype(np.float64))
        self.mb = bin2(mask.astype(np.float32)) > 0.999
        r_hq = (degrade_slices(ref, model) - self.y)[self.mb]
        self.offset = float(np.median(r_hq)) if r_hq.size else 0.0
        mad = float(np.median(np.abs(r_hq - self.offset))) if r_hq.size else 0.0
        self.noise = max(1.4826 * mad, 1e-12)
        self.lines, self.edge_note = hq_edge_lines(ref, mask, vs, volume=volume, volume_mask=volume_mask,
                                                   slices=slices)
        self.hq_fwhm = paired_fwhm(ref, mask, self.lines, vs)
        self.taper = detail_taper(mask)
        self.hq_detail = detail_power(ref, self.taper)

    def consistency(self, img) -> tuple[float, float]:
        r = (degrade_slices(img, self.model) - self.y - self.offset)[self.mb] / self.noise
        if not r.size:
            return float("nan"), float("nan")
        return float(np.sqrt(np.mean(r ** 2))), float(np.mean(np.abs(r) > CONSISTENCY_SIGMAS))

    def edges(self, img) -> tuple[float, float, int]:
        """(mean FWHM nm, median FWHM ratio to HQ, edges) on HQ's edges measured in both; NaN below 5 edges."""
        f = paired_fwhm(img, self.mask, self.lines, self.vs)
        ok = np.isfinite(f) & np.isfinite(self.hq_fwhm)
        if ok.sum() < 5:
            return float("nan"), float("nan"), int(ok.sum())
        return float(np.mean(f[ok])), float(np.median(f[ok] / self.hq_fwhm[ok])), int(ok.sum())

    def __call__(self, img, *, fidelity: bool = True) -> dict:
        from ..quality import psnr, ssim

        m = self.mask
        out = {"psnr_db": float("inf"), "ssim": 1.0}
        if fidelity:
            out["psnr_db"] = float(psnr(self.ref, img, data_range=self.range, mask=m))
            out["ssim"] = float(np.mean([ssim(self.ref[k], img[k], data_range=self.range, mask=m[k])
                                         for k in range(img.shape[0])]))
            out["fwhm_nm"], out["fwhm_ratio"], out["n_edges"] = self.edges(img)
        else:   # HQ itself: all its measured edges
            ok = np.isfinite(self.hq_fwhm)
            out["fwhm_nm"] = float(np.mean(self.hq_fwhm[ok])) if ok.sum() >= 5 else float("nan")
            out["fwhm_ratio"], out["n_edges"] = 1.0, int(ok.sum())
        out["detail_power"] = detail_power(img, self.taper) / self.hq_detail if self.hq_detail > 0 else float("nan")
        out["consistency_rms"], out["inconsistent_fraction"] = self.consistency(img)
        return out


def validation_sweep(model, pair, *, steps=DEFAULT_SWEEP, rule: str = "balanced", max_slices: int = 4,
                     seed: int = 0, tile: int = 512, overlap: int = 64, consistency: bool = False,
                     progress=None) -> StepSweep:
    """Sweep N on the validation slices of a prepared pair (:class:`~tomo4d.enhance.data.TrainingPair`).

    See the module docstring for the metrics and the rules.  ``consistency=True`` projects every output
    onto the LQ constraint (:func:`project_onto_lq`) before it is judged.
    """
    from .._validate import check_int
    from .holdout import spread_pick
    from .sample import check_model, restore_slices

    check_model(model)
    if model.one_step:
        raise InputError(f"the {model.objective} model works in one step; sweep an InDI model")
    steps = check_sweep_steps(steps, "steps")
    check_choice("rule", rule, RULES)
    max_slices = check_int("max_slices", max_slices, minimum=1)
    val = list(pair.val_slices)
    zs = spread_pick(val, max_slices)      # from every validation block (tomo4d.enhance.holdout)
    ref, lq_up, m = pair.hq[zs], pair.lq[zs], pair.mask[zs]
    info = model.info
    vs = tuple(float(v) for v in pair.hq_voxel_size_nm)
    three_d = getattr(pair, "route", "volume") == "volume" and pair.hq.shape[0] >= 3
    judge = _Judge(model, ref, lq_up, m, vs, volume=pair.hq if three_d else None,
                   volume_mask=pair.mask if three_d else None, slices=zs if three_d else None)
    bic = info.hq_scaling.inverse(info.lq_scaling.forward(lq_up))
    curves: dict[str, list[float]] = {k: [] for k in ("psnr_db", "ssim", "fwhm_nm", "consistency_rms",
                                                      "inconsistent_fraction", "fwhm_ratio", "detail_power")}
    for i, n in enumerate(steps):
        out = restore_slices(model, info.lq_scaling.forward(lq_up), steps=n, seed=seed, slice_ids=zs, tile=tile,
                             overlap=overlap)
        out = info.hq_scaling.inverse(out)
        if consistency:
            out = project_onto_lq(out, judge.y, model)
        for k, v in judge(out).items():
            if k in curves:
                curves[k].append(v)
        if progress is not None:
            progress(i + 1, len(steps))
    ratio, detail = tuple(curves.pop("fwhm_ratio")), tuple(curves.pop("detail_power"))
    sw = StepSweep(steps, *(tuple(curves[k]) for k in curves), bicubic=judge(bic), fwhm_ratio=ratio,
                   detail_power=detail,
                   hq={**judge(ref, fidelity=False), "edge_options": judge.edge_note},
                   lq_noise=float(judge.noise), slices=tuple(int(z) for z in zs), rule=rule, recommended_steps=1,
                   recommended={}, consistency_projection=bool(consistency))
    rec = {r: recommend(sw, r) for r in RULES}
    return StepSweep(**{**sw.__dict__, "recommended": rec, "recommended_steps": rec[rule]})


def sweep_figure(sw: StepSweep):
    """PSNR, fine detail (power beyond LQ's Nyquist / HQ's), edge FWHM and the inconsistent fraction against N,
    bicubic and HQ as reference lines; the recommended N marked.  A matplotlib Figure (object API)."""
    from matplotlib.figure import Figure

    sharp = ("fwhm_ratio", "edge FWHM / HQ (HQ's edges)") if sw.fwhm_ratio else ("fwhm_nm", "edge FWHM (nm)")
    panels = (("psnr_db", "PSNR vs HQ (dB)"),
              *((("detail_power", "detail power / HQ"),) if sw.detail_power else ()), sharp,
              ("inconsistent_fraction", f"LQ pixels > {CONSISTENCY_SIGMAS:g} sigma_n"))
    fig = Figure(figsize=(3 * len(panels), 2.8))
    hq = {**sw.hq, "fwhm_ratio": 1.0, "detail_power": 1.0}
    for j, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), j + 1)
        ax.plot(sw.steps, getattr(sw, key), "o-", label="InDI")
        if math.isfinite(sw.bicubic.get(key, float("nan"))):
            ax.axhline(sw.bicubic[key], color="k", ls="--", lw=1, label="bicubic")
        if key != "psnr_db" and math.isfinite(hq.get(key, float("nan"))):
            ax.axhline(hq[key], color="g", ls=":", lw=1, label="HQ")
        ax.axvline(sw.recommended_steps, color="r", lw=0.8)
        ax.set_xlabel("InDI steps N")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sw.steps), [str(n) for n in sw.steps], fontsize=7)
        ax.minorticks_off()
        if j == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"validation sweep: N = {sw.recommended_steps} ({sw.rule}); " +
                 ", ".join(f"{r} {n}" for r, n in sw.recommended.items()), fontsize=9)
    fig.tight_layout()
    return fig


def write_sweep_figure(path, sw: StepSweep) -> Path:
    from .._figure import figure_png
    from ..io import atomic_output

    with atomic_output(Path(path), overwrite=True) as tmp:
        tmp.write_bytes(figure_png(sweep_figure(sw)))
    return Path(path)
