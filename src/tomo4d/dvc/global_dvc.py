"""Global (regularised) DVC: one continuous displacement field for the whole volume.

Local DVC (:func:`~tomo4d.dvc.correlate`) matches every window on its own; it fails where a
window holds too little texture that survives between the states, which is what lithiating
silicon does at 40-60 % expansion (the particles lose their contrast, the matrix is nearly
featureless after the blur): on the phantom's default series at T3 only 42 % of the anode's
nodes converge, even started at the exact field (``benchmarks/RESULTS.md``, issue 15).

:func:`correlate_global` instead measures the nodal displacements of a trilinear control
grid (node spacing ``s``) *together*, minimising over the whole (masked) volume

    sum_x [J(x + u(x)) - b(x) I(x) - a(x)]^2 / var(I)  +  w * mean |Laplacian(u)|^2 (grid)
    + w_g * (mean |grad a|^2 / var(I) + mean |grad b|^2) (grid)

with ``I`` the reference, ``J`` the deformed volume, and ``a``, ``b`` brightness and contrast
fields on the same grid, estimated jointly with the displacement (the grey-level correction
of the silicon-anode study's lithiating particles).  Both volumes are first divided by the
reference's grey-level standard deviation, so the criterion, its minimiser and the solvers'
steps are the same for scans in any grey units (16-bit counts or attenuation in 1/cm).  Textureless regions borrow from their
neighbours through the regularisation instead of diverging, so every node is measured.
With ``psf_sigma_px`` the deformed volume is compared after an extra blur along z that
undoes the sharpening that stretching brings to features blurred by the same PSF before the
stretch (the blur of a feature stretched by ``lambda`` is compensated by ``sigma *
sqrt(lambda^2 - 1)`` in the deformed frame; ``lambda`` from the current field).

The minimisation is L-BFGS (torch, CPU or GPU) or Gauss-Newton (``solver="gauss-newton"``, CPU,
numba) over a pyramid of binned volumes and control grids (spacing ``s * 2^k`` at binning ``2^k``),
coarse to fine; an initial field (e.g. the previous time step's) gives the capture range that
40-60 % expansion needs.

Memory: about 30 float32 values per voxel of the finest level (dense field, sampling
coordinates, gradients), i.e. ~2 GiB for 256^3; a chunked (out-of-core) version is not built.

Over 500 lines because :class:`GlobalOptions` documents every option with the measurement behind its default; the
solvers live in ``_global_solver`` / ``_global_gn``, the restarts in ``_restart``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np

from .._threads import numba_threads, torch_threads
from .._validate import (
    as_image,
    as_mask,
    check_int,
    check_number,
    check_same_shape,
    show,
)
from ..errors import InputError, check_choice
from ._support import support_bounds, support_boxes, support_fraction
from .correlate import FAILED_WARNING_FRACTION, _voxel_sizes
from .field import DisplacementField, NodeStatus
from .options import _same

__all__ = ["GlobalOptions", "InterfaceMotion", "correlate_global", "control_grid", "resolve_global_options"]

log = logging.getLogger(__name__)

#: the largest control grid (nodes) on which ``solver="auto"`` takes Gauss-Newton: its sparse Hessian and that
#: Hessian's copies cost 17-21 kB per node more than L-BFGS (0.29 GB at 13824 nodes, 0.54 GB at 32768; session 27)
AUTO_GN_MAX_NODES = 100_000

#: z-blur widths (deformed-frame px of the level) of the stack the PSF compensation blends between
_PSF_STACK = (0.0, 0.75, 1.5, 2.25, 3.0, 4.0, 5.0, 6.5)


@dataclass(frozen=True)
class GlobalOptions:
    """Options of :func:`correlate_global`; every value checked on construction.

    Attributes
    ----------
    node_spacing : int
        Control-grid spacing of the finest level, px (>= 2).  The measured field is trilinear
        between nodes, so strain is resolved at about this length.
    levels : int
        Pyramid levels (>= 1): level ``k`` bins the volumes by ``2^k`` and uses a control grid
        of spacing ``node_spacing * 2^k``; levels whose binned volume would be smaller than 8
        voxels along an axis are skipped.
    regularisation : float
        Weight of the squared Laplacian of the nodal displacements (>= 0), relative to the data
        term normalised by the reference's variance.  Larger: smoother fields, less noise,
        particle-scale swelling smoothed away.
    grey_fields : bool
        Estimate brightness and contrast fields jointly (True), or assume the grey levels of a
        material point do not change (False: plain SSD).
    grey_regularisation : float
        Weight of the squared gradients of the brightness and contrast fields (>= 0).  The brightness ``a`` has
        the scans' grey units, so its term is divided by the reference's variance as the data term is: the weight
        and the measured field do not depend on the grey units (a 16-bit scan and the same scan scaled to [0, 1]
        read the same field).  Before session 22 it was not: on 16-bit scans (variance ~1e7) the brightness field
        was held flat, on the phantom's [0, 1] scans (0.04) penalised 25x less than the contrast.
    psf_sigma_px : float
        Gaussian PSF of the scans, px (>= 0; 0: no blur compensation).  For stretches >= 1
        along z only; in-plane and compressive blur differences are not compensated.
    final_regularisation : float, optional
        After the finest level, solve it again from its result with this weaker regularisation (>= 0;
        None: no second solve).  A continuation: the ``regularisation`` gives the capture range from the
        start, the weaker weight then lets finer motion through (a 0.6 px lateral wave of 16 px wavelength:
        0.35 -> 0.04 px).  On the battery phantom it costs accuracy (incremental route, 0.05 then 0.005:
        T1 / T2 median error 0.235 / 0.426 px against 0.208 / 0.375 with 0.05 alone; benchmarks/RESULTS.md,
        session 18).  Costs a second finest-level solve.
    max_iterations : int
        L-BFGS iterations per level (>= 1).
    tolerance : float
        Change of the objective, relative to its value at the level's start, below which a level stops (> 0).
    out_of_view_fraction : float
        A node whose support (the voxels within one spacing of it) has more than this
        fraction of its masked voxels mapped outside the deformed volume is ``OUT_OF_VIEW``.
    mask_fraction : float
        A node whose support has less than this fraction of voxels inside the mask is
        ``OUTSIDE_MASK``, and Gauss-Newton (L-BFGS with ``hold_without_data``) holds it at its start value (the
        restarts' ring fit) rather than solve it from the few masked voxels of its elements; a free L-BFGS gives it
        the regularisation's interpolation.  At the mask's edge such a node's few voxels (3 of its 13 px across the
        edge) leave it poorly determined: a textured 60^3 crop stretched 30 % axially, a 5 px face band masked
        out, read usable nodes up to 5.8 px off with only the nodes without data held and 0.2 here; 0.080 px with
        0.6 (0.5 left the nodes on the mask's edge, half their support in it, 2.6 px off; ``tests/dvc/test_cli.py``,
        benchmarks/RESULTS.md, sessions 35-36).  0.6: a node at least one voxel inside a flat edge of the mask at
        node spacings up to 7 px (``(s + 2) / (2 s + 1)``).
    threads : int, optional
        torch CPU threads during the call (restored afterwards); default: ``tomo4d.threads``, else the
        CPUs this process may use.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available); checked against the
        torch build and the GPUs present when the correlation runs (``tomo4d._validate.check_device``).
    interface_weight : float
        Weight (per px^2, >= 0) of the constraint that each ``interfaces=`` plane's mean axial displacement equals
        its measured value (:class:`InterfaceMotion`); 0 turns the constraint off.  100: the LQ phantom's T1 with
        the true interface motion reads the anode's side strains within 0.01 (20-30 % low without; session 20).
    interface_grey_stiffness : float
        With ``interfaces=`` and ``grey_fields``: the brightness and contrast fields' z-differences on the
        control-grid edges within one node spacing of a tied plane are penalised ``1 +`` this many times as much as
        elsewhere (>= 0; 0, the default: not at all).  Across a blurred interface a z-gradient of the grey fields and
        a z-gradient of ``u_z`` explain the same change of the mean grey profile, and a converged solve trades one for
        the other: Gauss-Newton on the LQ phantom read the collector side up to 0.080 low and the separator side
        0.056 high with 0, within 0.011 at T1-T5 with 100.  The L-BFGS route, stopped at its iteration cap, does not
        make that trade to the same degree, and 100 moves it the other way on the default phantom (collector side up
        to 0.032 high, separator side 0.039 low at T6, against within 0.02 with 0) while it brings the demo within
        0.015 (from -0.034) and the half-contrast-loss phantom within 0.011: not the runner's default
        (benchmarks/RESULTS.md, session 25).  Stiffening the grey fields everywhere instead doubles the median error
        (they can no longer follow the particles' own darkening).
    interpolation : str
        How the deformed volume is sampled between voxels: ``"cubic"`` (B-spline, prefiltered) or ``"linear"``
        (trilinear: biases sub-pixel displacements towards whole voxels, up to 0.11 px per axis on the
        phantom's texture; session 16).  Cubic costs 1.5-3x the time and ~130 more bytes per voxel of the
        level (eight lookups' coordinates and values); at 20-30 % stretch both read the same.
    solver : str
        ``"lbfgs"`` (torch's L-BFGS; on the CPU on the compiled value and gradient of the Gauss-Newton solver's
        element pass, on a GPU on torch's autograd), ``"gauss-newton"`` (CPU: the same criterion minimised as
        finite-element DVC is, Gauss-Newton steps on an element-by-element Hessian solved by conjugate gradients,
        :mod:`tomo4d.dvc._global_gn`; best with ``interpolation="cubic"``, whose criterion is smooth) or ``"auto"``
        (below).  Gauss-Newton reaches the criterion's minimum in 5-10 iterations where L-BFGS stops at its
        ``max_iterations`` well above it (the graded-stretch test: objective 0.050 against 0.150).  Gauss-Newton
        holds the nodes whose elements hold no data at their start values, except those an interface tie averages
        over; L-BFGS does with ``hold_without_data``.  Snow sine
        field, spacing 10, one level: 0.0093 px median in 1.1 CPU s, 5.6x SPAM's nodes per CPU second; L-BFGS
        0.0107 px in 5.9 CPU s (1.04x; 58 CPU s on autograd, before session 25).  On the phantom's large-strain
        route both solvers read the HQ sides within 0.02 at every step (session 22).  On blurred LQ scans the
        converged field at ``regularisation=0.05`` follows the noise; the runner's ``method: global`` and the demo
        run ``solver="auto", interpolation="cubic", interface_grey_stiffness=10`` with ``regularisation=0.2`` on
        deconvolved scans and 0.05 on scans as reconstructed (within 0.01 on the demo but for +0.022 at one step;
        sessions 26, 29), while the library's default stays L-BFGS (a GPU; the
        Hessian's memory at millions of nodes; 0.05 reads sharp scans best) (benchmarks/RESULTS.md, sessions
        21-27).  ``"auto"``: Gauss-Newton on the CPU for grids up to :data:`AUTO_GN_MAX_NODES` nodes, else L-BFGS;
        ``notes["options"]["solver"]`` holds the one that ran.
    hold_without_data : bool
        L-BFGS: hold the nodes whose elements hold no data (no masked voxel mapped into view), and those with less
        than ``mask_fraction`` of their support in the mask (a tie's nodes stay free), at their start values, as
        Gauss-Newton always does, so that both solvers minimise over the same unknowns (the runner's converged route
        sets it: its L-BFGS, on a GPU or above the node limit, then reads Gauss-Newton's field on the phantom; session
        28).  Off, L-BFGS lets those nodes follow the Laplacian, which extrapolates the field past a mask's edge
        (lateral faces masked out, zero start: in-plane strain 0.019 of 0.0198, against 0.012-0.016 held at zero), but
        run to convergence on the phantom's route it read det F - 1 0.02-0.10 low, the nodes at the data's edge losing
        their penalty.
    restarts : int
        Solve the finest level up to this many times more, each with the held nodes (less than ``mask_fraction`` of
        their support in the mask) restarted from each node row's fit of the measured field (in-plane affine, u_z a
        plane; :mod:`tomo4d.dvc._restart`), until a restart moves no node by 0.01 px (0: none).  The held nodes
        carry the start's in-plane displacement, and the Laplacian ties the measured stretch to it across the mask's
        edge: the axial start's in-plane scale is poorly determined, and with it the runner's route read det F - 1
        up to 0.041 low on the HQ phantom of seed 1 (five restarts: up to 0.025, the sides' ln U_zz unchanged; the
        runner's converged route takes 5; benchmarks/RESULTS.md, session 34).  Each restart costs one finest-level
        solve from a near-converged start (the route's pairs took 1.3-1.5x the time);
        ``notes["restarts_max_change_px"]`` holds each restart's largest change.
    """

    node_spacing: int = 4
    levels: int = 3
    regularisation: float = 0.05
    grey_fields: bool = True
    grey_regularisation: float = 1.0
    psf_sigma_px: float = 0.0
    final_regularisation: float | None = None
    max_iterations: int = 100
    tolerance: float = 1e-7
    out_of_view_fraction: float = 0.05
    mask_fraction: float = 0.6
    threads: int | None = None
    device: str = "cpu"
    interpolation: str = "linear"
    interface_weight: float = 100.0
    solver: str = "lbfgs"
    interface_grey_stiffness: float = 0.0
    hold_without_data: bool = False
    restarts: int = 0

    def __post_init__(self):
        check_int("node_spacing", self.node_spacing, minimum=2)
        check_int("levels", self.levels, minimum=1, maximum=6)
        check_number("regularisation", self.regularisation, minimum=0)
        for name in ("grey_fields", "hold_without_data"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name}={show(getattr(self, name))} is not a bool; give True or False")
        check_number("grey_regularisation", self.grey_regularisation, minimum=0)
        check_number("psf_sigma_px", self.psf_sigma_px, minimum=0, maximum=20)
        if self.final_regularisation is not None:
            check_number("final_regularisation", self.final_regularisation, minimum=0)
        check_int("max_iterations", self.max_iterations, minimum=1)
        check_int("restarts", self.restarts, minimum=0, maximum=20)
        check_number("tolerance", self.tolerance, minimum=0, exclusive_minimum=True)
        check_number("out_of_view_fraction", self.out_of_view_fraction, minimum=0, maximum=1)
        check_number("mask_fraction", self.mask_fraction, minimum=0, maximum=1)
        if self.threads is not None:
            check_int("threads", self.threads, minimum=1)
        check_choice("interpolation", self.interpolation, ("linear", "cubic"))
        check_number("interface_weight", self.interface_weight, minimum=0)
        check_choice("solver", self.solver, ("lbfgs", "gauss-newton", "auto"))
        check_number("interface_grey_stiffness", self.interface_grey_stiffness, minimum=0)
        if not isinstance(self.device, str) or not self.device.strip():
            raise InputError(f"device={show(self.device)} is not a device name; give 'cpu', 'cuda', 'cuda:N' or 'auto'")


@dataclass(frozen=True)
class InterfaceMotion:
    """A material interface of the reference, the plane ``z = z_px``, whose mean axial displacement between the two
    states was measured independently: e.g. the segmented collector or separator interface of both scans (the
    quantify stage's interfaces).  Given to :func:`correlate_global` as ``interfaces=``, it ties the field's mean
    ``u_z`` over the plane (within the mask's lateral footprint) to ``displacement_px``.

    Why: a strong edge between two materials keeps its position under blur and grey change, where the texture next
    to it does not.  On low-resolution scans (the phantom's LQ series, PSF 313 nm against a 2.2 um anode) the field
    rounds the kinks at both interfaces and the anode's side strains read 20-30 % low; tied to the exact interface
    motion they read within 0.01 at T1 and 0.02 at T2, after which the split between the halves drifted while each
    incremental pair tied the T0 planes moved by the field (tied to each pair's own segmented planes, the deconvolved
    faces left out, within 0.02 at every step; session 24); tied to segmented interfaces they carry the
    segmentation's error (benchmarks/RESULTS.md, session 20).  The displacement
    is that of the material on the plane: a segmented surface of swelling particles rises further (on the demo
    0.57-0.59 px per step more than the T0 plane's material, which read the separator side up to 0.057 high; tied to
    the plane's true displacement, within 0.026; session 23).
    """

    z_px: float
    displacement_px: float

    def __post_init__(self):
        check_number("InterfaceMotion.z_px", self.z_px)
        check_number("InterfaceMotion.displacement_px", self.displacement_px)


def _check_interfaces(interfaces, shape) -> tuple[InterfaceMotion, ...]:
    if interfaces is None:
        return ()
    if isinstance(interfaces, InterfaceMotion):
        interfaces = (interfaces,)
    out = tuple(interfaces)
    for k, v in enumerate(out):
        if not isinstance(v, InterfaceMotion):
            raise InputError(f"interfaces[{k}]={show(v)} is not an InterfaceMotion; build each with "
                             "tomo4d.dvc.InterfaceMotion(z_px=..., displacement_px=...)")
        if not 0 <= v.z_px <= shape[0] - 1:
            raise InputError(f"interfaces[{k}].z_px={v.z_px:g} lies outside the volume's z range 0..{shape[0] - 1}; "
                             "give the plane in reference px")
    return out


def control_grid(shape, node_spacing: int, *, plane_z_px: float | None = None
                 ) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """Nodes of a control grid of integer spacing centred in a volume of ``shape``.

    Returns ``(positions (N, 3) px, grid_shape, origin (3,) px)``; node ``(i, j, k)`` sits at
    ``origin + (i, j, k) * node_spacing``, all nodes inside the volume.  With ``plane_z_px`` the grid is shifted
    along z so that a plane of nodes lies at that z (the first plane at ``plane_z_px`` modulo the spacing).
    """
    s = int(node_spacing)
    gs, origin = _grid_layout(shape, s, plane_z_px)
    axes = [origin[a] + s * np.arange(gs[a]) for a in range(3)]
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return pos, gs, origin


def _grid_layout(shape, s: int, plane_z_px: float | None) -> tuple[tuple[int, int, int], np.ndarray]:
    """:func:`control_grid`'s ``(grid_shape, origin)`` without its node positions."""
    gs = [max(2, (int(n) - 1) // s + 1) for n in shape]
    origin = np.array([max(0, ((int(n) - 1) - (g - 1) * s) // 2) for n, g in zip(shape, gs)], float)
    if plane_z_px is not None:
        origin[0] = float(plane_z_px) - s * np.floor(float(plane_z_px) / s)
        gs[0] = max(2, int(np.floor((int(shape[0]) - 1 - origin[0]) / s)) + 1)
    return tuple(gs), origin


def covering_node_plane_px(mask_axes, node_spacing: int, *, cover_z_px: tuple[float, float],
                           mask_fraction: float = 0.6) -> float:
    """The ``node_plane_z_px`` (0 <= z < spacing) whose node rows let the field cover most of the z range
    ``cover_z_px`` under a separable mask: its z phase chosen among the ``node_spacing`` integer ones.

    A node is usable where at least ``mask_fraction`` of its support (the ``2 * spacing + 1`` voxels around its
    rounded position per axis, clipped to the volume, as the global solver's) is in the mask; the field covers a
    cell of the grid where its eight nodes are usable.  Below a mask's bottom face (the collector interface of
    ``dvc.mask: above_collector`` / ``electrode``) the strip under the lowest usable row is not covered, and with
    the rows centred in the volume it is anywhere from that row's least offset to one spacing more.  On the HQ
    phantom (spacing 4, the collector interface at 7.18 px) the collector side at T5 read +0.012 with the lowest
    usable row 1.8 px above the interface (this choice), and +0.026 / +0.036 / +0.039 / +0.035 with it 2.8 / 3.2 /
    4.0 / 4.8 px above (benchmarks/RESULTS.md, sessions 39-40).  Lateral faces left out of the mask (a
    deconvolution's margin) count too: on a volume a few nodes wide the row that barely holds ``mask_fraction`` at
    the face loses its edge columns, and a higher row may cover more.

    Parameters
    ----------
    mask_axes : three 1-D arrays (z, y, x)
        The mask as ``mz[:, None, None] & my[None, :, None] & mx[None, None, :]`` (bool, or fractions 0..1).
    node_spacing : int
    cover_z_px : (float, float)
        The z range (reference px) whose covered volume is maximised, e.g. the electrode's band.
    mask_fraction : float
        :attr:`GlobalOptions.mask_fraction`.

    Returns
    -------
    float
        The z of one node row, in ``[0, node_spacing)``; ties go to the lowest.
    """
    s = check_int("node_spacing", node_spacing, minimum=1)
    f = check_number("mask_fraction", mask_fraction, minimum=0.0, maximum=1.0)
    axes = [np.asarray(a, float).ravel() for a in mask_axes]
    if len(axes) != 3 or min(a.size for a in axes) < 2:
        raise InputError(f"mask_axes must be three 1-D arrays (z, y, x) of two or more voxels, got {len(axes)}")
    if len(cover_z_px) != 2:
        raise InputError(f"cover_z_px={show(cover_z_px)} must be (lo, hi), px")
    lo, hi = (check_number("cover_z_px", v) for v in cover_z_px)
    if not hi > lo:
        raise InputError(f"cover_z_px={show(cover_z_px)}: hi must be above lo")
    shape = tuple(a.size for a in axes)
    best, best_volume = 0.0, -1.0
    for phase in range(min(s, shape[0])):
        gs, origin = _grid_layout(shape, s, float(phase))
        lo_b, hi_b = support_bounds(shape, origin, s, gs)
        frac = [np.array([a[q:h].mean() for q, h in zip(lo_b[k], hi_b[k])]) for k, a in enumerate(axes)]
        z = origin[0] + s * np.arange(gs[0])
        overlap = np.clip(np.minimum(z[1:], hi) - np.maximum(z[:-1], lo), 0, None)
        volume = float((_covered_cells(frac, f) * overlap).sum())
        if volume > best_volume + 1e-9:
            best, best_volume = float(phase), volume
    return best


def _covered_cells(frac, f: float) -> np.ndarray:
    """Per layer of grid cells along z, how many have all eight nodes usable (support fraction ``fz * fy * fx >=
    f``, the per-axis fractions ``frac``).  Every fraction is >= 0, so a cell's least corner product is the product of
    the per-axis least of its two nodes: one lateral (gy-1, gx-1) test per layer, not the whole node grid."""
    least = [np.minimum(a[1:], a[:-1]) for a in frac]
    lateral = least[1][:, None] * least[2][None, :]
    return np.array([np.count_nonzero(lz * lateral >= f) for lz in least[0]], float)


def correlate_global(reference, deformed, *, mask=None, phi0=None, initial: DisplacementField | None = None,
                     interfaces=None, node_plane_z_px: float | None = None, options: GlobalOptions | None = None,
                     **shortcuts) -> DisplacementField:
    """Global DVC: a regularised trilinear displacement field, reference -> deformed.

    Parameters
    ----------
    reference, deformed : array-like or Volume, shape (z, y, x)
        Same shape and voxel size.
    mask : array-like of bool, optional
        Reference voxels whose grey levels are matched (e.g. the electrode); the field is
        measured inside and regularised across the rest.
    phi0 : array-like (4, 4), optional
        Global affine initial guess about the volume centre (e.g. ``tomo4d.register(...).phi``);
        the capture range for 40-60 % axial stretch.  ``initial``, when given, wins.
    initial : DisplacementField, optional
        Starting field (any grid of these volumes), e.g. the previous time step's; without it
        the coarsest level starts from zero, which captures displacements of about
        ``node_spacing * 2^(levels-1)`` px.
    interfaces : InterfaceMotion or sequence of them, optional
        Planes of the reference whose mean axial displacement was measured independently (the segmented
        interfaces of both scans); the field's mean ``u_z`` over each is tied to it with
        ``options.interface_weight``.  ``notes["interfaces"]`` then holds each plane's target and reached value.
    node_plane_z_px : float, optional
        Shift the control grid along z so that a plane of nodes lies at this z (reference px): e.g. the rigid
        collector's interface, where the swelling electrode's displacement has a kink that a trilinear field can
        only hold at a node (between two nodes it is smeared over a spacing and the node row below reads the
        electrode's slope continued into the collector).
    options : GlobalOptions, optional
        Or keyword shortcuts of its fields (``node_spacing=6``, ``psf_sigma_px=2.8``, ...).

    Returns
    -------
    DisplacementField
        On the control grid (``node_spacing_px`` = ``half_window_px`` = the spacing): per node the displacement and
        the deformation gradient from central differences of the nodal values; status ``CONVERGED``, ``OUTSIDE_MASK``
        or ``OUT_OF_VIEW``.  ``notes`` hold the method, options, objective and iterations per level, and
        ``failed_fraction``: the fraction of the nodes in the mask that are out of view (above
        :data:`~tomo4d.dvc.FAILED_WARNING_FRACTION` a warning gives it; a mask under which no node has
        ``mask_fraction`` of its support is refused).  A warning is issued (and ``notes["converged"]`` is False) when
        the finest level hit ``max_iterations``, and one when the solver held nodes with less than ``mask_fraction``
        of their support in the mask at a zero start (no ``phi0`` nor ``initial``): the field next to the mask's edge
        is then drawn toward no motion.
    """
    opts = _resolve(options, shortcuts)
    voxel = _voxel_sizes(reference, deformed)
    ref = as_image(reference, name="reference")
    dfm = as_image(deformed, name="deformed")
    check_same_shape(ref, dfm, ("reference", "deformed"))
    msk = as_mask(mask, ref.shape)
    too_small = [a for a in range(3) if ref.shape[a] < 2 * opts.node_spacing]
    if too_small:
        a = too_small[0]
        raise InputError(f"node_spacing={opts.node_spacing} is too large for the volume along {'zyx'[a]} "
                         f"({ref.shape[a]} voxels): give at most {ref.shape[a] // 2}")
    if node_plane_z_px is not None:
        check_number("node_plane_z_px", node_plane_z_px, minimum=0, maximum=ref.shape[0] - 1)
    pos, gs, origin = control_grid(ref.shape, opts.node_spacing, plane_z_px=node_plane_z_px)
    _check_mask_selects_nodes(msk, origin, gs, opts)
    requested = opts.solver
    opts = dataclasses.replace(opts, solver=auto_solver(opts, gs))
    u0 = _initial_nodes(initial, phi0, pos, ref.shape)
    planes = _check_interfaces(interfaces, ref.shape)
    t0 = time.perf_counter()
    # the compiled criterion (Gauss-Newton; L-BFGS on the CPU) runs numba's parallel kernels: the same thread count
    compiled = nullcontext() if opts.device.startswith("cuda") else numba_threads(opts.threads)
    with torch_threads(opts.threads), compiled:
        from ._global_solver import solve_pyramid

        sol = solve_pyramid(ref, dfm, msk, u0.reshape(gs + (3,)), origin, opts, interfaces=planes,
                            plane_z_px=node_plane_z_px)
        changes = []  # each restart's largest change, px
        if opts.restarts:  # the nodes outside the data restarted from the measured field (GlobalOptions.restarts)
            from ._restart import restart_solves

            finest = dataclasses.replace(opts, levels=1)
            sol, changes = restart_solves(
                sol, lambda u: solve_pyramid(ref, dfm, msk, u, origin, finest, interfaces=planes,
                                             plane_z_px=node_plane_z_px),
                lambda s: (_statuses(s.support_in_mask, s.support_out_of_view, opts) == NodeStatus.CONVERGED,
                           s.support_in_mask < opts.mask_fraction),
                origin, opts.node_spacing, opts.restarts)
    status = _statuses(sol.support_in_mask, sol.support_out_of_view, opts)
    failed = _failed_fraction(status)
    phis = _phis(sol.u_nodes, opts.node_spacing)
    notes = {"method": "global", "options": asdict(opts), "levels": sol.level_notes,
             "converged": bool(sol.converged), "seconds": round(time.perf_counter() - t0, 3),
             "solver_requested": requested, "volume_shape_zyx": list(ref.shape), "grid_origin_px": origin.tolist(),
             "node_plane_z_px": None if node_plane_z_px is None else float(node_plane_z_px),
             "failed_fraction": failed}
    if planes:
        notes["interfaces"] = sol.interfaces
    if opts.restarts:
        notes["restarts_max_change_px"] = changes
    capped = sum(lv.get("cg_capped_steps", 0) for lv in sol.level_notes)
    if capped and mask is None:  # the actionable case (masked deconvolved scans cap too: slow, not wrong)
        warnings.warn(f"global DVC: in {capped} Gauss-Newton steps the conjugate gradients stopped at their cap "
                      "before solving the step: the system is ill-conditioned, most often by textureless voxels (air, "
                      "a blurred separator) in the match; give a mask of the sample (e.g. the electrode), which "
                      "solves faster and holds the nodes without data", RuntimeWarning, stacklevel=2)
    if not sol.converged:
        warnings.warn(f"global DVC: the finest level stopped at max_iterations={opts.max_iterations} before the "
                      "objective settled; the field may not be final (raise max_iterations)", RuntimeWarning,
                      stacklevel=2)
    if failed > FAILED_WARNING_FRACTION:
        n_in = int(np.count_nonzero(status != NodeStatus.OUTSIDE_MASK))
        warnings.warn(f"global DVC: {100 * failed:.0f} % of the {n_in} nodes in the mask are out of view (their "
                      "support maps outside the deformed volume); the field is returned with these statuses: check "
                      "the start (phi0, initial), the mask and whether the sample leaves the scanned region",
                      RuntimeWarning, stacklevel=2)
    pinned = _pinned_at_zero(sol.support_in_mask, u0, opts)
    if pinned:
        warnings.warn(pinned, RuntimeWarning, stacklevel=2)
    field = DisplacementField(positions_zyx_px=pos, phi=phis, status=status.ravel(), grid_shape=gs,
                              node_spacing_px=(opts.node_spacing,) * 3, half_window_px=(opts.node_spacing,) * 3,
                              voxel_size_nm=tuple(float(v) for v in voxel), notes=notes)
    log.info("global DVC %d nodes in %.2f s: %s", field.n_nodes, notes["seconds"], field.status_counts())
    return field


def auto_solver(opts: GlobalOptions, grid_shape) -> str:
    """The solver that ``opts.solver`` stands for on a control grid of ``grid_shape``: itself unless ``"auto"``, which
    is Gauss-Newton on the CPU up to :data:`AUTO_GN_MAX_NODES` nodes, else L-BFGS (a GPU device, or a grid whose
    Gauss-Newton Hessian would take more than about 2 GB)."""
    if opts.solver != "auto":
        return opts.solver
    device = opts.device.strip().lower()
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "gauss-newton" if device == "cpu" and int(np.prod(grid_shape)) <= AUTO_GN_MAX_NODES else "lbfgs"


def _resolve(options, shortcuts) -> GlobalOptions:
    if options is not None and not isinstance(options, GlobalOptions):
        raise InputError(f"options={show(options)} is not a GlobalOptions; build one with tomo4d.dvc.GlobalOptions(...)")
    if options is not None:  # a keyword may repeat what the options hold, not contradict it (as correlate)
        for k, v in shortcuts.items():
            if hasattr(options, k) and not _same(v, getattr(options, k)):
                raise InputError(f"{k} is given both as a keyword ({k}={show(v)}) and in options ({k}="
                                 f"{show(getattr(options, k))}); give it in one place only")
    return resolve_global_options(options or GlobalOptions(), shortcuts, name="correlate_global")


def _check_mask_selects_nodes(msk, origin, grid_shape, opts: GlobalOptions) -> None:
    """Refuse a mask under which no node has ``mask_fraction`` of its support (before any solve)."""
    if msk is None:
        return
    frac = support_fraction(msk, support_boxes(msk.shape, origin, opts.node_spacing, grid_shape))
    if not np.any(frac >= opts.mask_fraction):
        raise InputError(f"mask selects none of the {frac.size} nodes: each needs mask_fraction="
                         f"{show(opts.mask_fraction)} of its support (the voxels within node_spacing="
                         f"{opts.node_spacing} px) inside the mask; the mask covers {100 * float(np.mean(msk)):.3g} % "
                         f"of the volume and at most {100 * float(frac.max()):.3g} % of a support; check the mask, or "
                         "lower mask_fraction or node_spacing")


def _failed_fraction(status: np.ndarray) -> float:
    """The fraction of the nodes in the mask that are out of view (the global route's failed nodes)."""
    n_in = int(np.count_nonzero(status != NodeStatus.OUTSIDE_MASK))
    return int(np.count_nonzero(status == NodeStatus.OUT_OF_VIEW)) / max(n_in, 1)


def resolve_global_options(base: GlobalOptions, changes: dict, *, name: str) -> GlobalOptions:
    """``base`` with ``changes`` (option name -> value); an unknown name is refused with the closest one."""
    if not changes:
        return base
    names = [f.name for f in dataclasses.fields(GlobalOptions)]
    for k in changes:
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{k}= is not an option of {name}{hint}; options: {', '.join(names)}")
    return dataclasses.replace(base, **changes)


def _initial_nodes(initial, phi0, pos, shape) -> np.ndarray:
    """Initial displacement (N, 3) px at the control nodes: ``initial``, else ``phi0``, else zero."""
    if initial is None and phi0 is None:
        return np.zeros_like(pos)
    if initial is None:
        from ..register.phi import apply_phi_to_points, check_phi

        centre = (np.asarray(shape, float) - 1.0) / 2.0
        return apply_phi_to_points(pos, check_phi(phi0, name="phi0"), centre=centre) - pos
    from .correlate import _check_initial

    _check_initial(initial, shape)
    ok = initial.usable
    if not ok.any():
        raise InputError("initial has no usable node (every node failed); give a measured field or omit initial")
    u, _ = initial.interpolate(pos, order=1)
    return np.asarray(u, float)


def _pinned_at_zero(in_mask, u0, opts: GlobalOptions) -> str | None:
    """The warning when the solver held nodes without data (less than ``mask_fraction`` of their support in the mask)
    at a zero start: the
    field next to the mask's edge is then drawn toward no motion (a 40^3 crop expanded 2 % in-plane, the lateral
    faces masked out, Gauss-Newton: in-plane strain 0.014-0.016 of 0.0198 from zero, 0.019-0.021 from the true
    affine start, 0.016-0.018 from half of it; free L-BFGS 0.019; session 29)."""
    holds = opts.solver == "gauss-newton" or opts.hold_without_data
    n = int(np.count_nonzero(np.asarray(in_mask) < opts.mask_fraction))
    if not holds or n == 0 or np.any(u0):
        return None
    who = "Gauss-Newton holds" if opts.solver == "gauss-newton" else "hold_without_data holds"
    return (f"global DVC: {n} nodes with less than mask_fraction={show(opts.mask_fraction)} of their support in the "
            f"mask stayed at the zero start ({who} them), so the field "
            "next to the mask's edge is drawn toward no motion (2 % in-plane expansion with the faces masked out read "
            "0.014 of 0.0198); give phi0 or initial (e.g. tomo4d.register's phi), or solver='lbfgs' without "
            "hold_without_data")


def _statuses(in_mask, out_of_view, opts: GlobalOptions) -> np.ndarray:
    status = np.full(in_mask.shape, NodeStatus.CONVERGED, np.int8)
    status[in_mask < opts.mask_fraction] = NodeStatus.OUTSIDE_MASK
    status[(in_mask >= opts.mask_fraction) & (out_of_view > opts.out_of_view_fraction)] = NodeStatus.OUT_OF_VIEW
    return status


def _phis(u_nodes: np.ndarray, spacing: int) -> np.ndarray:
    """Per-node Phi (N, 4, 4): translation = displacement, F = I + central differences of the nodes."""
    gs = u_nodes.shape[:3]
    grad = np.stack([np.gradient(u_nodes, float(spacing), axis=a) if gs[a] > 1 else np.zeros_like(u_nodes)
                     for a in range(3)], axis=-1)  # (..., 3 components, 3 axes)
    n = int(np.prod(gs))
    phis = np.tile(np.eye(4), (n, 1, 1))
    phis[:, :3, :3] += grad.reshape(n, 3, 3)
    phis[:, :3, 3] = u_nodes.reshape(n, 3)
    return phis
