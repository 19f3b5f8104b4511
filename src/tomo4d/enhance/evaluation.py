"""Step-count sweep and the evaluation table (LQ, bicubic, CNN, GAN, InDI against HQ).

Both work on a prepared pair (:func:`tomo4d.enhance.data.prepare_pair`): the LQ
is up-sampled, aligned and resampled onto the HQ grid, so every method is
judged on the same voxels.  Metrics come from :mod:`tomo4d.quality`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .._validate import check_int
from ..errors import InputError, check_choice
from ..quality import compare
from .data import prepare_pair
from .sample import check_model, restore_slices
from .steps import DEFAULT_SWEEP, StepSweep, check_sweep_steps, model_steps, validation_sweep

log = logging.getLogger(__name__)


def _model_output(model, lq_up: np.ndarray, *, steps: int, seed: int, tile: int, overlap: int,
                  slice_ids=None) -> np.ndarray:
    """Run ``model`` on up-sampled LQ slices (input units) -> HQ units."""
    info = model.info
    out = restore_slices(model, info.lq_scaling.forward(lq_up), steps=steps, seed=seed, slice_ids=slice_ids,
                         tile=tile, overlap=overlap)
    return info.hq_scaling.inverse(out)


#: the sweep's result (the name before issue 19)
SweepResult = StepSweep


def _pair_for(model, lq, hq, *, register, phi0, pair):
    if pair is not None:
        return pair
    info = model.info
    # the split the model was trained with: models trained before the spread split held out the last slices
    holdout = "spread" if "holdout" in info.provenance else "end"
    return prepare_pair(lq, hq, register=register, phi0=phi0, val_fraction=info.config.val_fraction,
                        holdout=holdout, strip=2 * info.config.crop)


def sweep_steps(model, lq, hq, *, steps: Sequence[int] = DEFAULT_SWEEP, register: bool = True, phi0=None,
                max_slices: int = 4, seed: int = 0, tile: int = 512, overlap: int = 64, pair=None,
                rule: str = "balanced", consistency: bool = False,
                progress: Callable[[int, int], None] | None = None) -> StepSweep:
    """Measure quality against the number of InDI steps on the pair's validation slices and recommend N.

    The sweep that training stores in the model folder (:func:`tomo4d.enhance.steps.validation_sweep`:
    PSNR, SSIM, edge FWHM against HQ, data consistency against LQ), run on any pair.

    Parameters
    ----------
    model : EnhanceModel
        An InDI model.
    lq, hq : Volume
        The pair (the training pair: its held-out slices are used).
    steps : sequence of int
        Step counts to try (1..50).
    register, phi0
        Alignment of the pair, as in :func:`tomo4d.enhance.train`.
    max_slices : int
        Validation slices used (evenly spread).
    pair : TrainingPair, optional
        An already prepared pair (skips the alignment).
    rule : {"balanced", "distortion", "sharpness"}
        Rule of ``recommended_steps``.
    consistency : bool
        Project the outputs onto the LQ constraint before judging them.
    """
    check_model(model)
    if model.one_step:
        raise InputError(f"the {model.objective} model works in one step; sweep an InDI model")
    steps = check_sweep_steps(steps, "steps")
    max_slices = check_int("max_slices", max_slices, minimum=1)
    pr = _pair_for(model, lq, hq, register=register, phi0=phi0, pair=pair)
    return validation_sweep(model, pr, steps=steps, rule=rule, max_slices=max_slices, seed=seed, tile=tile,
                            overlap=overlap, consistency=consistency, progress=progress)


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """The comparison table and what the figure shows.

    Attributes
    ----------
    table : tomo4d.quality.QualityTable
        PSNR, SSIM, SIFT congruent features, edge FWHM (nm) and CNR of every method
        (``"HQ"`` is the reference row).
    images : mapping of str to ndarray
        The evaluated (z, y, x) stacks by method, HQ first (HQ grid, input units).
    mask : ndarray of bool
        Evaluated voxels.
    slices : tuple of int
        z indices of the pair that were evaluated.
    voxel_size_nm : (float, float, float)
        HQ voxel size.
    """

    table: object
    images: Mapping[str, np.ndarray] = field(repr=False)
    mask: np.ndarray = field(repr=False)
    slices: tuple[int, ...]
    voxel_size_nm: tuple[float, float, float]

    def header(self) -> list[str]:
        return self.table.header()

    def rows(self) -> list[list]:
        return self.table.table_rows()

    def to_dict(self) -> dict:
        return {"slices": list(self.slices), "voxel_size_nm": list(self.voxel_size_nm),
                "table": self.table.to_dict()}


def _nearest_lq(lq_up: np.ndarray) -> np.ndarray:
    """What the native LQ looks like on the HQ grid: 2x2 in-plane binning, then pixel replication."""
    s, y, x = lq_up.shape
    a = lq_up[:, : y // 2 * 2, : x // 2 * 2].reshape(s, y // 2, 2, x // 2, 2).mean((2, 4))
    out = np.repeat(np.repeat(a, 2, axis=1), 2, axis=2)
    return np.pad(out, ((0, 0), (0, y - out.shape[1]), (0, x - out.shape[2])), mode="edge").astype(np.float32)


def evaluate(lq, hq, *, models: Mapping[str, object] | None = None, steps: int | None = None,
             register: bool = True, phi0=None, slices: str = "validation", max_slices: int = 8, seed: int = 0,
             tile: int = 512, overlap: int = 64, pair=None, val_fraction: float = 0.1,
             edge_half_length_px: float = 40.0, edge_labels=None, edge_foreground=None,
             z_centre: int | None = None) -> EvaluationResult:
    """Compare LQ, bicubic and every model in ``models`` against HQ.

    Parameters
    ----------
    lq, hq : Volume
        A pair: the training pair (then ``slices="validation"`` judges held-out
        slices only) or an unseen pair (``slices="all"``).
    models : mapping of name to EnhanceModel
        E.g. ``{"CNN": cnn, "GAN": gan, "InDI": indi}``; InDI models use ``steps``
        (default their recommended steps), the baselines one step.
    slices : {"validation", "all"}
        Which slices of the pair are evaluated.
    max_slices : int
        At most this many contiguous slices are evaluated: centred in one validation block (the one
        nearest ``z_centre``, else the longest) or, with ``slices="all"``, in the stack.
    edge_half_length_px : float
        Longest half edge profile (HQ pixels) of the edge-resolution measurement: at
        least 3.5 sigma of the blurriest (LQ) edge, below the distance between structures.
    edge_labels : (z, y, x) int array, optional
        Phase labels on the HQ grid of the pair (e.g. a phantom's truth labels): the edge
        profiles are then taken perpendicular to the true boundaries of ``edge_foreground``
        (label-guided, :func:`tomo4d.quality.edges_from_labels`) instead of detected
        automatically, for every image alike.
    edge_foreground : int or sequence of int, optional
        Label value(s) whose boundaries are measured (required with ``edge_labels``).
    z_centre : int, optional
        Centre the evaluated block of slices on this z index of the pair (default: the
        centre of the pool), e.g. where the material of interest is.

    Returns
    -------
    EvaluationResult
    """
    check_choice("slices", slices, ("validation", "all"))
    models = dict(models or {})
    for name, m in models.items():
        check_model(m, f"models[{name!r}]")
    if steps is not None:
        steps = check_int("steps", steps, minimum=1)
    max_slices = check_int("max_slices", max_slices, minimum=1)
    pr = pair if pair is not None else prepare_pair(lq, hq, register=register, phi0=phi0, val_fraction=val_fraction)
    pool = list(pr.val_slices) if slices == "validation" else list(range(pr.hq.shape[0]))
    # a contiguous block (3D edge normals need neighbouring slices): within the validation block nearest
    # z_centre (else the longest, the first of equals), centred in it
    runs = np.split(np.asarray(pool), np.flatnonzero(np.diff(pool) != 1) + 1)
    if z_centre is not None:
        run = min(runs, key=lambda r: float(np.abs(r - int(z_centre)).min()))
        near = int(np.argmin(np.abs(run - int(z_centre))))
        start = int(np.clip(near - max_slices // 2, 0, max(0, len(run) - max_slices)))
    else:
        run = max(runs, key=len)
        start = max(0, (len(run) - max_slices) // 2)
    zs = [int(z) for z in run[start:start + max_slices]]
    ref, lq_up, m = pr.hq[zs], pr.lq[zs], pr.mask[zs]
    # LQ and bicubic brought to HQ intensities with the first model's scalings (affine, metric-neutral for SIFT/edges)
    conv = next(iter(models.values()), None)

    def to_hq(a):
        if conv is None:
            return a
        return conv.info.hq_scaling.inverse(conv.info.lq_scaling.forward(a))

    images = {"LQ": to_hq(_nearest_lq(lq_up)), "bicubic": to_hq(lq_up)}
    for name, model in models.items():
        n = 1 if model.one_step else model_steps(model, steps)[0]
        images[name] = _model_output(model, lq_up, steps=n, seed=seed, tile=tile, overlap=overlap, slice_ids=zs)
    vs = tuple(float(v) for v in pr.hq_voxel_size_nm)
    mid = list(range(len(zs)))
    edge_opts = {"max_half_length_px": float(edge_half_length_px)}
    if edge_labels is not None:
        lab = np.asarray(edge_labels)
        if lab.shape != pr.hq.shape:
            raise InputError(f"edge_labels has shape {lab.shape} but the HQ grid is {pr.hq.shape}; give labels "
                             "on the HQ grid of the pair")
        if edge_foreground is None:
            raise InputError("edge_labels needs edge_foreground= (the label value(s) whose boundaries to measure)")
        edge_opts.update(labels=lab[zs], foreground=edge_foreground)
    table = compare(ref, images, voxel_size_nm=vs, mask=m, reference_name="HQ", slices=mid,
                    edge_options=edge_opts)
    return EvaluationResult(table, {"HQ": ref, **images}, m, tuple(int(z) for z in zs), vs)


def evaluation_figure(result: EvaluationResult, *, roi: int | None = None):
    """Matched regions of interest (one per method) and matched edge profiles across one HQ edge.

    Returns a matplotlib :class:`~matplotlib.figure.Figure` (object API, no pyplot).
    """
    from matplotlib.figure import Figure

    names = list(result.images)
    k = len(result.slices) // 2
    ref = result.images["HQ"][k].astype(np.float64)
    msk = result.mask[k]
    ny, nx = ref.shape
    r = max(16, min(ny, nx) // 3) if roi is None else check_int("roi", roi, minimum=1)
    g = ndimage.gaussian_gradient_magnitude(ref, 1.5) * msk
    energy = ndimage.uniform_filter(g, r)
    cy, cx = np.unravel_index(int(np.argmax(energy)), energy.shape)
    y0, x0 = int(np.clip(cy - r // 2, 0, ny - r)), int(np.clip(cx - r // 2, 0, nx - r))
    # the strongest HQ edge inside the ROI and its normal
    sub = g[y0:y0 + r, x0:x0 + r]
    ey, ex = np.unravel_index(int(np.argmax(sub)), sub.shape)
    ey, ex = ey + y0, ex + x0
    gy = ndimage.gaussian_filter(ref, 1.5, order=(1, 0))[ey, ex]
    gx = ndimage.gaussian_filter(ref, 1.5, order=(0, 1))[ey, ex]
    norm = np.hypot(gy, gx) or 1.0
    ny_, nx_ = gy / norm, gx / norm
    d = np.linspace(-8, 8, 129)
    coords = np.stack([ey + d * ny_, ex + d * nx_])
    lo, hi = np.percentile(ref[msk] if msk.any() else ref, [0.5, 99.5])
    fig = Figure(figsize=(2.3 * len(names), 5.2))
    for i, name in enumerate(names):
        ax = fig.add_subplot(2, len(names), i + 1)
        ax.imshow(result.images[name][k][y0:y0 + r, x0:x0 + r], cmap="gray", vmin=lo, vmax=hi,
                  interpolation="nearest")
        ax.plot([coords[1][0] - x0, coords[1][-1] - x0], [coords[0][0] - y0, coords[0][-1] - y0], "r-", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    ax = fig.add_subplot(2, 1, 2)
    px = result.voxel_size_nm[2]
    for name in names:
        prof = ndimage.map_coordinates(result.images[name][k].astype(np.float64), coords, order=3)
        ax.plot(d * px, prof, "k-" if name == "HQ" else "-", lw=2 if name == "HQ" else 1.2, label=name)
    ax.set_xlabel("distance across the edge (nm)")
    ax.set_ylabel("grey value")
    ax.legend(fontsize=8, ncol=min(len(names), 6))
    fig.tight_layout()
    return fig
