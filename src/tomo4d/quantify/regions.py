"""Regional mechanics: strain statistics and histograms per electrode layer over time.

The electrode of the reference step (T0) is cut into ``n_layers`` slabs between the collector and
separator interfaces (two layers: the collector side and the separator side); every node of a
strain field (reference coordinates) falls into one layer by its depth (z, the electrode-thickness
axis).  Statistics come from :func:`tomo4d.dvc.regional_strain`, histograms from the same valid nodes;
the layer's volume mean (what its material did, the figure to compare with a truth) from
:func:`tomo4d.dvc.slab_volume_mean`.

Components are finite-strain measures by default: Hencky (logarithmic) axial strain ``hencky_zz``
and volumetric strain ``det F - 1`` (``volumetric``); any name of
:meth:`tomo4d.dvc.StrainField.component` can be asked for (``green_zz``, ``hencky_yy``,
``stretch_1``, ...), the small-strain ones (``small_zz``, ``volumetric_small``; a bare ``zz`` is
``small_zz``) only on request since they are wrong by ~strain^2 / 2 at battery expansions.
Change from earlier versions: the default components were ``zz, yy, xx, volumetric`` (small
strain) and the histogram component ``zz``; the table columns (``step, region, component, n_nodes,
strain_mean, ...``) are unchanged, ``component`` now reads ``hencky_zz`` etc.; ``strain_volume_mean`` and
``volume_covered`` were added after them.
"""

# ``tomo4d.dvc`` is imported inside the functions that need it: it loads scipy.ndimage (~0.25 s).
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._validate import check_number, show
from ..errors import InputError
from ._common import check_int, step_names

__all__ = ["ELECTRODE", "RegionalStrain", "regional_strain_series", "layer_names"]

STATS = ("mean", "median", "std", "p05", "p95")
#: The region after the layers: the whole electrode between the two interfaces (what its mean volumetric strain, the
#: study's headline figure, is measured over; the layers alone left it to be combined by hand).
ELECTRODE = "electrode"


@dataclass(frozen=True, eq=False)
class RegionalStrain:
    """Strain statistics per (step, layer, component) and histograms.

    Attributes
    ----------
    step_names : tuple of str
        Steps with a strain field (T0 -> Tn).
    region_names : tuple of str
        Layers, collector side first, then (with two or more layers) :data:`ELECTRODE`, the whole electrode.
    components : tuple of str
        Strain components (``hencky_zz`` axial, ``volumetric`` = ``det F - 1``, ...; see
        :meth:`tomo4d.dvc.StrainField.component`).
    mean, median, std, p05, p95 : (n_steps, n_regions, n_components) float64
        Statistics over the valid nodes of each layer (dimensionless strain).
    volume_mean : (n_steps, n_regions, n_components) float64
        The layer's volume average (:func:`tomo4d.dvc.slab_volume_mean`: ``F`` over the whole layer, from a
        displacement field's interpolant or a strain field's node ``F``): what the layer's material did on average, the figure to report and to
        compare with a truth.  ``mean`` (over the nodes whose position falls in the layer) leaves out the
        strain next to the layer's faces.
    volume_covered : (n_steps, n_regions) float64
        Fraction of the layer's volume inside valid nodes (the rest is left out of ``volume_mean``).
    n_nodes : (n_steps, n_regions) int64
    hist_component : str
        Component of the histograms.
    hist_edges : (bins + 1,) float64
    hist_counts : (n_steps, n_regions, bins) int64
    """

    step_names: tuple[str, ...]
    region_names: tuple[str, ...]
    components: tuple[str, ...]
    mean: np.ndarray
    median: np.ndarray
    std: np.ndarray
    p05: np.ndarray
    p95: np.ndarray
    volume_mean: np.ndarray
    volume_covered: np.ndarray
    n_nodes: np.ndarray
    hist_component: str
    hist_edges: np.ndarray
    hist_counts: np.ndarray

    def value(self, region: str, component: str = "hencky_zz", statistic: str = "mean") -> np.ndarray:
        """(n_steps,) one statistic of one component in one region."""
        if region not in self.region_names:
            raise InputError(f"region {region!r} is not known; use one of {', '.join(self.region_names)}")
        if component not in self.components:
            raise InputError(f"component {component!r} was not computed; use one of {', '.join(self.components)}")
        if statistic not in STATS + ("volume_mean",):
            raise InputError(f"statistic {statistic!r} is not known; use one of {', '.join(STATS)}, volume_mean")
        return getattr(self, statistic)[:, self.region_names.index(region), self.components.index(component)]

    def to_columns(self) -> dict[str, np.ndarray]:
        """Long table: one row per (step, region, component)."""
        s, r, c = np.meshgrid(np.arange(len(self.step_names)), np.arange(len(self.region_names)),
                              np.arange(len(self.components)), indexing="ij")
        s, r, c = s.ravel(), r.ravel(), c.ravel()
        cols = {"step": np.asarray(self.step_names)[s], "region": np.asarray(self.region_names)[r],
                "component": np.asarray(self.components)[c], "n_nodes": self.n_nodes[s, r]}
        for k in STATS:
            cols[f"strain_{k}"] = getattr(self, k)[s, r, c]
        cols["strain_volume_mean"] = self.volume_mean[s, r, c]
        cols["volume_covered"] = self.volume_covered[s, r]
        return cols

    def to_dict(self) -> dict:
        return {k: v.tolist() for k, v in self.to_columns().items()}


def layer_names(n_layers: int) -> tuple[str, ...]:
    """Names of ``n_layers`` electrode layers, collector side first."""
    if n_layers == 2:
        return ("collector side", "separator side")
    names = [f"layer {i + 1}/{n_layers}" for i in range(n_layers)]
    names[0] += " (collector)"
    names[-1] += " (separator)"
    return tuple(names)


def regional_strain_series(strains: Sequence, *, collector_z_px: float, separator_z_px: float, n_layers: int = 2,
                           components: Sequence[str] = ("hencky_zz", "volumetric"),
                           hist_component: str = "hencky_zz", bins: int = 50, value_range=None,
                           names: Sequence[str] | None = None) -> RegionalStrain:
    """Strain statistics and histograms of electrode layers for each step.

    Parameters
    ----------
    strains : sequence of tomo4d.dvc.DisplacementField or tomo4d.dvc.StrainField
        Each step's field T0 -> Tn (nodes in T0 coordinates, px): a displacement field (its strain by
        :func:`tomo4d.dvc.strain_field`; the layers' volume means from its interpolant, preferred) or a
        strain field (volume means from its node ``F``; see :func:`tomo4d.dvc.slab_volume_mean`).
    collector_z_px, separator_z_px : float
        The T0 collector/anode and anode/separator interfaces along z, px of the field's grid
        (e.g. ``Thickness.collector_z_nm`` mean / voxel size).
    n_layers : int
        Number of depth bands of equal T0 thickness between the two interfaces (2: collector and
        separator halves), collector side first; with two or more, the whole electrode (:data:`ELECTRODE`) follows
        as one more region.
    components : sequence of str
        See :meth:`tomo4d.dvc.StrainField.component`; default Hencky zz and ``det F - 1``
        (:data:`tomo4d.dvc.strain.SMALL_COMPONENTS` only on request).
    hist_component : str
        Component of the histograms.
    bins : int
    value_range : (float, float), optional
        Histogram range (default: the 0.5-99.5 % range over all steps and layers).
    names : sequence of str, optional
        Step names (default ``T1, T2, ...``).

    Returns
    -------
    RegionalStrain
    """
    from ..dvc import DisplacementField, StrainField, regional_strain, slab_volume_mean, strain_field

    sources = list(strains)
    if not sources:
        raise InputError("strains is empty; give one DisplacementField or StrainField per step (T0 -> Tn)")
    for i, s in enumerate(sources):
        if not isinstance(s, (StrainField, DisplacementField)):
            raise InputError(f"strains[{i}] is a {type(s).__name__}; give tomo4d.dvc.DisplacementField or "
                             "StrainField objects")
    items = [strain_field(s) if isinstance(s, DisplacementField) else s for s in sources]
    n_layers = check_int("n_layers", n_layers, minimum=1)
    zc = check_number("collector_z_px", collector_z_px)
    zs = check_number("separator_z_px", separator_z_px)
    if not zs > zc:
        raise InputError(f"separator_z_px={show(zs)} must be above collector_z_px={show(zc)} (the electrode lies "
                         "between the two interfaces)")
    bins = check_int("bins", bins, minimum=1)
    comps = tuple(dict.fromkeys(str(c) for c in components))
    if hist_component not in comps:
        comps = comps + (hist_component,)
    rnames = layer_names(n_layers) + ((ELECTRODE,) if n_layers > 1 else ())
    bounds = [(k / n_layers, (k + 1) / n_layers) for k in range(n_layers)] + ([(0.0, 1.0)] if n_layers > 1 else [])
    names = step_names(len(items), names if names is not None else [f"T{i + 1}" for i in range(len(items))])
    shape = (len(items), len(rnames), len(comps))
    out = {k: np.full(shape, np.nan) for k in STATS}
    n_nodes = np.zeros(shape[:2], np.int64)
    vmean, covered = np.full(shape, np.nan), np.zeros(shape[:2])
    masks_all = []
    for i, st in enumerate(items):
        for k, (a, b) in enumerate(bounds):
            sm = slab_volume_mean(sources[i], zc + a * (zs - zc), zc + b * (zs - zc), components=comps)
            vmean[i, k], covered[i, k] = sm.values, sm.covered
        depth = (st.positions_zyx_px[..., 0] - zc) / (zs - zc)
        layer = np.floor(depth * n_layers).astype(np.int64)
        masks = {rnames[k]: (layer == k) & (depth >= 0) & (depth < 1) for k in range(n_layers)}
        if n_layers > 1:
            masks[ELECTRODE] = (depth >= 0) & (depth < 1)
        masks_all.append(masks)
        for r in regional_strain(st, masks, components=comps):
            k, c = rnames.index(r.region), comps.index(r.component)
            n_nodes[i, k] = r.n_nodes
            for name in STATS:
                out[name][i, k, c] = getattr(r, name)
    vals = [items[i].component(hist_component)[m & items[i].valid] for i in range(len(items))
            for m in masks_all[i].values()]
    allv = np.concatenate(vals) if vals else np.zeros(0)
    if value_range is None:
        value_range = (float(np.percentile(allv, 0.5)), float(np.percentile(allv, 99.5))) if allv.size else (-1.0, 1.0)
        if value_range[1] <= value_range[0]:
            value_range = (value_range[0] - 0.5, value_range[0] + 0.5)
    edges = np.linspace(value_range[0], value_range[1], int(bins) + 1)
    counts = np.zeros((len(items), len(rnames), int(bins)), np.int64)
    for i in range(len(items)):
        for k, m in enumerate(masks_all[i].values()):
            counts[i, k] = np.histogram(items[i].component(hist_component)[m & items[i].valid], bins=edges)[0]
    return RegionalStrain(step_names=names, region_names=rnames, components=comps, n_nodes=n_nodes,
                          volume_mean=vmean, volume_covered=covered,
                          hist_component=hist_component, hist_edges=edges, hist_counts=counts, **out)
