"""Global DVC's Gauss-Newton solver (``GlobalOptions(solver="gauss-newton")``): the same criterion as the L-BFGS
route (value and gradient against torch's autograd), its Hessian, and accuracy on the snow and graded-stretch
cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tomo4d.dvc import GlobalOptions, InterfaceMotion, NodeStatus, control_grid, correlate_global
from tomo4d.errors import InputError

torch = pytest.importorskip("torch")


def _problem(texture, warp, *, interpolation, psf=0.0, grey=True):
    """A 32^3 pair (stretched 8 % with a contrast loss), a mask, an interface plane; the level and the GN problem."""
    from tomo4d.dvc._global_gn import _Problem
    from tomo4d.dvc._global_solver import _level, _psf_weights

    ref = np.ascontiguousarray(texture[:32, :32, :32])
    dfm = (warp(ref, lambda p: np.stack([0.08 * p[0], 0 * p[1], 0.02 * p[2]])) * 0.9 + 300).astype(np.float32)
    mask = np.zeros(ref.shape, bool)
    mask[3:28] = True
    opts = GlobalOptions(node_spacing=6, interpolation=interpolation, grey_fields=grey, psf_sigma_px=psf,
                         solver="gauss-newton", regularisation=0.05, grey_regularisation=1.0,
                         interface_grey_stiffness=30.0)
    _, gs, origin = control_grid(ref.shape, 6)
    lv = _level(ref, dfm, mask, 1, opts, torch.device("cpu"), (InterfaceMotion(z_px=10.3, displacement_px=0.9),))
    rng = np.random.default_rng(0)
    U = torch.from_numpy(rng.normal(0, 0.4, (3,) + gs).astype(np.float32))
    U[0] += torch.from_numpy(0.08 * (origin[0] + 6 * np.arange(gs[0]))[:, None, None].astype(np.float32))
    A = torch.from_numpy(rng.normal(0, 30, (1,) + gs).astype(np.float32))
    B = torch.from_numpy(rng.normal(1, 0.05, (1,) + gs).astype(np.float32))
    if not grey:  # plain SSD: no brightness, unit contrast
        A, B = torch.zeros_like(A), torch.ones_like(B)
    weights = _psf_weights(lv, U, opts)
    return lv, opts, weights, _Problem(lv, opts, weights), (U, A, B)


@pytest.mark.parametrize("interpolation, psf, grey", [("cubic", 0.0, True), ("linear", 0.0, True),
                                                       ("cubic", 2.0, True), ("cubic", 0.0, False)])
def test_value_and_gradient_are_the_lbfgs_criterion(texture, warp, interpolation, psf, grey):
    """The compiled element pass gives the torch objective (data, regularisations, interface tie) and its autograd
    gradient at an arbitrary point: one criterion, two solvers."""
    from tomo4d.dvc._global_solver import _objective

    lv, opts, weights, prob, (U, A, B) = _problem(texture, warp, interpolation=interpolation, psf=psf, grey=grey)
    x = prob.pack(U, A, B)
    f, data, grad, _ = prob.evaluate(x, False)
    params = [t.clone().requires_grad_(True) for t in (U, A, B)]
    loss, tdata, _ = _objective(lv, *params, opts, weights, prob.var)
    loss.backward()
    assert f == pytest.approx(float(loss.detach()), rel=2e-4) and data == pytest.approx(float(tdata.detach()), rel=2e-4)
    want = np.concatenate([p.grad.numpy().ravel() for p in (params if grey else params[:1])])
    for k, (got, exp) in enumerate(zip(np.split(grad, prob.nf), np.split(want, prob.nf))):  # field by field
        np.testing.assert_allclose(got, exp, atol=2e-3 * np.abs(exp).max(), err_msg=f"field {k}")


def test_both_solvers_solve_for_the_same_nodes(texture, warp):
    """L-BFGS's nodes (``free_nodes``, torch) are Gauss-Newton's (``_free``, from the compiled pass): those of an
    element with a masked voxel mapped inside the deformed volume that have ``mask_fraction`` of their support in the
    mask (``supported_nodes``), and those the interface tie averages over; also when part of the mask maps out of
    view.  The mask's edge rows, with data but little support, are held by both."""
    from tomo4d.dvc._global_gn import _free
    from tomo4d.dvc._global_solver import _dense, free_nodes, supported_nodes, tie_nodes, voxel_elements

    lv, opts, weights, prob, (U, A, B) = _problem(texture, warp, interpolation="cubic")
    elem = [torch.from_numpy(e) for e in voxel_elements(lv)[0]]
    supported = supported_nodes(lv, opts.mask_fraction)
    ties = tie_nodes(lv)
    counts = []
    for lift in (0.0, 14.0):  # 14 px up: the mask's top rows map out of view
        V = U.clone()
        V[0] += lift
        prob.evaluate(prob.pack(V, A, B), False)
        want = _free(prob).reshape(lv.grid_shape)
        got = free_nodes(lv, _dense(V, lv), elem, ties, torch.from_numpy(supported)).numpy()
        np.testing.assert_array_equal(got, want)
        counts.append(int(want.sum()))
        weak = prob.with_data.reshape(lv.grid_shape) & ~supported & ~ties.numpy()
        assert weak.any() and not want[weak].any(), int(weak.sum())
    assert counts[1] < counts[0], counts  # measured 108 of 216 nodes at 14 px, 144 at 0 (9 px: 144, its rows weak)


def test_the_compiled_out_of_view_map_is_torchs(texture, warp):
    """The CPU's out-of-view map (the compiled kernel behind the nodes' OUT_OF_VIEW fractions) is torch's: the masked
    voxels the field maps outside the deformed volume."""
    from tomo4d.dvc._global_solver import _dense, _level, _mapped, _out_of_view

    lv, opts, weights, prob, (U, A, B) = _problem(texture, warp, interpolation="cubic")
    ref = np.ascontiguousarray(texture[:32, :32, :32])
    coarse = _level(ref, ref, ref > np.median(ref), 2, opts, torch.device("cpu"))  # a binned level: px / binning
    Uc = torch.from_numpy(np.random.default_rng(2).normal(0, 1.5, (3,) + coarse.grid_shape).astype(np.float32))
    counts = []
    for level, field in ((lv, U), (coarse, Uc)):
        for lift in (0.0, 9.0, -7.5):
            V = field.clone()
            V[0] += lift
            with torch.no_grad():
                want = level.mask.numpy() & ~_mapped(level, _dense(V, level))[1].numpy()
            np.testing.assert_array_equal(_out_of_view(level, V), want)
            counts.append(int(want.sum()))
    assert counts[0] < min(counts[1:3]), counts  # measured 39 voxels, and thousands lifted


def test_lbfgs_holds_the_nodes_without_data_at_their_start(texture, warp, monkeypatch):
    """With ``hold_without_data`` (the runner's route), nodes whose elements hold no masked voxel keep the initial
    field's values under L-BFGS (on the compiled criterion and on torch's autograd, the GPU's route) as under
    Gauss-Newton; without it L-BFGS moves them."""
    import tomo4d.dvc._global_gn as gn
    from tomo4d.dvc import DisplacementField

    ref = np.ascontiguousarray(texture[:32, :32, :32])
    dfm = warp(ref, lambda p: np.stack([0.04 * p[0], 0 * p[1], 0 * p[2]])).astype(np.float32)
    mask = np.zeros(ref.shape, bool)
    mask[14:] = True
    pos, gs, _ = control_grid(ref.shape, 6)
    phi = np.tile(np.eye(4), (len(pos), 1, 1))
    phi[:, 0, 3] = 0.7 + 0.1 * pos[:, 1] / 32  # a start with a slope the Laplacian would not keep
    start = DisplacementField(pos, phi, np.zeros(len(pos), np.int8), grid_shape=gs, node_spacing_px=(6,) * 3,
                              half_window_px=(6,) * 3)
    for solver in ("lbfgs", "gauss-newton", "lbfgs-autograd"):
        if solver == "lbfgs-autograd":
            monkeypatch.setattr(gn, "compiled_criterion", lambda *a: None)
            solver = "lbfgs"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            f = correlate_global(ref, dfm, mask=mask, initial=start, node_spacing=6, levels=1, threads=1,
                                 solver=solver, interpolation="cubic", regularisation=0.2, max_iterations=200,
                                 hold_without_data=True)
        low = pos[:, 0] + 6 <= 13  # every element of these nodes ends below the mask
        assert low.any() and not low.all()
        np.testing.assert_allclose(f.displacement_zyx_px[low, 0], phi[low, 0, 3], atol=1e-5, err_msg=solver)
        assert np.abs(f.displacement_zyx_px[~low, 0] - phi[~low, 0, 3]).max() > 0.1, solver  # the others moved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        free = correlate_global(ref, dfm, mask=mask, initial=start, node_spacing=6, levels=1, threads=1,
                                solver="lbfgs", interpolation="cubic", regularisation=0.2, max_iterations=200)
    assert np.abs(free.displacement_zyx_px[low, 0] - phi[low, 0, 3]).max() > 0.01  # the library's default: free


def test_nodes_held_at_a_zero_start_are_flagged(texture, warp):
    """A solver that holds the nodes without data (Gauss-Newton; L-BFGS with ``hold_without_data``) pins the field
    next to the mask's edge to a zero start: a warning says so. Not from a start (``phi0``), nor from free L-BFGS,
    nor without a mask."""
    ref = np.ascontiguousarray(texture[:24, :24, :24])
    dfm = warp(ref, lambda p: np.stack([0.04 * p[0], 0 * p[1], 0 * p[2]])).astype(np.float32)
    mask = np.zeros(ref.shape, bool)
    mask[12:] = True
    run = dict(node_spacing=6, levels=1, threads=1, max_iterations=20, interpolation="cubic")

    def pinned(**kw):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            correlate_global(ref, dfm, **{**run, **kw})
        return any("stayed at the zero start" in str(w.message) for w in caught)

    assert pinned(mask=mask, solver="gauss-newton")
    assert pinned(mask=mask, solver="lbfgs", hold_without_data=True)
    assert not pinned(mask=mask, solver="gauss-newton", phi0=np.diag([1.04, 1.0, 1.0, 1.0]))
    assert not pinned(mask=mask, solver="lbfgs")
    assert not pinned(solver="gauss-newton")


def test_hessian_is_the_exact_one_at_zero_residual(texture):
    """Where the residual vanishes (identical scans, zero field, unit contrast) the Gauss-Newton Hessian is the
    exact Hessian: H v equals the central difference of the gradient along v."""
    from tomo4d.dvc._global_gn import _Problem
    from tomo4d.dvc._global_solver import _level

    ref = np.ascontiguousarray(texture[:30, :30, :30])
    opts = GlobalOptions(node_spacing=6, interpolation="cubic", solver="gauss-newton")
    lv = _level(ref, ref, None, 1, opts, torch.device("cpu"))
    prob = _Problem(lv, opts, None)
    gs = lv.grid_shape
    x = prob.pack(torch.zeros((3,) + gs), torch.zeros((1,) + gs), torch.ones((1,) + gs))
    _, _, g0, H = prob.evaluate(x, True)
    assert np.abs(g0).max() < 1e-6 * np.abs(H.diagonal()).max()
    v = np.random.default_rng(1).normal(size=x.size)
    v[3 * prob.G:] *= [1e-2] * (2 * prob.G)  # grey unknowns on their own scale
    eps = 1e-3
    gp = prob.evaluate(x + eps * v, False)[2]
    gm = prob.evaluate(x - eps * v, False)[2]
    np.testing.assert_allclose(H @ v, (gp - gm) / (2 * eps), atol=2e-3 * np.abs(H @ v).max())


@pytest.mark.realdata
def test_snow_sine_field(snow_sine):
    """The small-strain acceptance case (u_z = 2 sin(pi z / 100) px): median error <= 0.01 px over the interior
    nodes (measured 0.0093 px at spacing 10 in 6 Gauss-Newton iterations; the L-BFGS route 0.0107 px after
    98)."""
    ref, dfm = snow_sine
    f = correlate_global(ref, dfm, node_spacing=10, levels=1, threads=1, solver="gauss-newton", interpolation="cubic")
    pos = f.positions_zyx_px
    true = np.stack([2.0 * np.sin(np.pi * pos[:, 0] / 100.0), 0 * pos[:, 0], 0 * pos[:, 0]], 1)
    err = np.linalg.norm(f.displacement_zyx_px - true, axis=1)
    inner = np.all((pos >= 10) & (pos <= 89), axis=1)
    assert np.median(err[inner]) <= 0.01 and np.percentile(err[inner], 95) < 0.03
    assert f.notes["converged"] and f.notes["levels"][-1]["iterations"] <= 8


def test_capped_conjugate_gradients_are_counted_and_warned(texture, warp, monkeypatch):
    """A step whose conjugate gradients stop at their cap is counted in the level's notes, and without a mask warned
    about (without one the demo's LQ pair capped every step and took 446 s against 58 s with the electrode mask; with
    a mask, deconvolved HQ scans cap too: slow, nothing to act on); a well-posed problem warns nothing."""
    from tomo4d.dvc import _global_gn

    dfm = warp(texture, lambda x: np.stack([0.02 * x[0], 0 * x[1], 0 * x[2]]))
    kw = dict(node_spacing=10, levels=1, threads=1, solver="gauss-newton", interpolation="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = correlate_global(texture, dfm, **kw)
    assert "cg_capped_steps" not in f.notes["levels"][-1] and f.notes["converged"]
    monkeypatch.setattr(_global_gn, "CG_MAXITER", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = correlate_global(texture, dfm, max_iterations=5, **kw)
    assert any("conjugate gradients stopped at their cap" in str(w.message) for w in caught)
    assert f.notes["levels"][-1]["cg_capped_steps"] >= 1
    with warnings.catch_warnings(record=True) as caught:   # with a mask: counted, not warned (the mask is the advice)
        warnings.simplefilter("always")
        f = correlate_global(texture, dfm, max_iterations=5, mask=np.ones(texture.shape, bool), **kw)
    assert not any("conjugate gradients" in str(w.message) for w in caught)
    assert f.notes["levels"][-1]["cg_capped_steps"] >= 1


Z0, SA, SB = 8.0, 0.25, 0.0025  # test_global's graded stretch: axial strain 0.25 at Z0 -> 0.45 at z = 48


def _graded(points):
    dz = points[0] - Z0
    return np.stack([SA * dz + SB * dz ** 2, 0 * points[1], 0 * points[2]])


def test_graded_stretch_with_grey_change(texture, warp):
    """25 -> 45 % axial strain with the contrast falling to 0.4 along z (test_global's case): converged from a global
    affine guess in a few iterations.  Measured 0.047 px median in 5 iterations (3 s): the criterion's own optimum,
    which lies 0.064 px from the exact field when solved from it (trilinear u of a quadratic stretch, trilinear grey
    fields); L-BFGS stops at an objective three times higher, 0.030 px (linear) / 0.062 px (cubic) in 22-53 s (on
    torch's autograd, session 21)."""
    z = np.linspace(0.0, 1.0, 60)[:, None, None]
    moved = warp(texture, _graded)
    dfm = ((moved - texture.mean()) * (1.0 - 0.6 * z) + texture.mean() + 800.0 * z).astype(np.float32)
    c = (60 - 1) / 2.0
    phi = np.eye(4)
    phi[0, 0] = 1 + SA + 2 * SB * (c - Z0)
    phi[0, 3] = SA * (c - Z0) + SB * (c - Z0) ** 2
    f = correlate_global(texture, dfm, phi0=phi, node_spacing=6, levels=2, threads=1, solver="gauss-newton",
                         interpolation="cubic")
    ok = f.status == NodeStatus.CONVERGED
    err = np.linalg.norm(f.displacement_zyx_px - _graded(f.positions_zyx_px.T).T, axis=1)
    assert ok.sum() > 0.55 * f.n_nodes
    assert np.median(err[ok]) < 0.06, np.median(err[ok])
    assert f.notes["converged"] and f.notes["levels"][-1]["iterations"] < 20


def test_interface_tie_and_bad_solver():
    flat = np.full((25, 17, 17), 100.0, np.float32)
    f = correlate_global(flat, flat, node_spacing=4, levels=1, threads=1, grey_fields=False, solver="gauss-newton",
                         interfaces=InterfaceMotion(z_px=10.5, displacement_px=1.5))
    assert f.notes["interfaces"][0]["reached_px"] == pytest.approx(1.5, abs=0.01)
    plane = np.stack(np.meshgrid([10.5], np.arange(17.0), np.arange(17.0), indexing="ij"), -1).reshape(-1, 3)
    assert f.interpolate(plane, order=1)[0][:, 0].mean() == pytest.approx(1.5, abs=0.01)
    with pytest.raises(InputError, match="solver='newton'"):
        GlobalOptions(solver="newton")


def test_a_tie_below_the_mask_moves_its_unmeasured_nodes(texture):
    """An interface plane in an element without data (the mask starts just above it, as a moved band lifts the
    collector's edge): the tie averages over a node that no data reaches.  Held at its start value, that node made
    the tie push the measured node above it instead (the demo's shrinking pair: +0.46 px where the truth is -0.08,
    the collector side 0.03-0.05 low; session 26).  Solved for, the measured rows stay at the true zero motion."""
    ref = np.ascontiguousarray(texture[:40, :24, :24])
    mask = np.zeros(ref.shape, bool)
    mask[13:] = True  # nodes at z = 1, 5, 9, 13, ...: the element [9, 13) holds no data
    phi = np.eye(4)
    phi[0, 3] = -1.0  # a start 1 px off everywhere
    f = correlate_global(ref, ref.copy(), phi0=phi, mask=mask, node_spacing=4, levels=1, threads=1,
                         solver="gauss-newton", grey_fields=False,
                         interfaces=InterfaceMotion(z_px=11.5, displacement_px=0.0))
    z, uz = f.positions_zyx_px[:, 0], f.displacement_zyx_px[:, 0]
    assert f.notes["interfaces"][0]["reached_px"] == pytest.approx(0.0, abs=0.01)
    assert abs(uz[z == 13].mean()) < 0.1, uz[z == 13].mean()  # measured -0.015; the node held at its start: +0.60
    assert np.median(np.abs(uz[z >= 17])) < 0.05, np.median(np.abs(uz[z >= 17]))


def test_lbfgs_on_the_cpu_runs_on_the_compiled_criterion(texture, warp, monkeypatch):
    """The L-BFGS route on the CPU takes its value and gradient from the compiled element pass (6.6x autograd per
    evaluation on the snow pair) and follows the same path as with torch's autograd (rounding apart: float64 sums against float32): the same
    objective within 1 %, the field within 0.01 px (median), with grey fields, an interface tie and the PSF
    compensation."""
    import tomo4d.dvc._global_gn as gn

    ref = np.ascontiguousarray(texture[:32, :32, :32])
    dfm = (warp(ref, lambda p: np.stack([0.06 * p[0], 0 * p[1], 0.01 * p[2]])) * 0.9 + 300).astype(np.float32)
    kw = dict(node_spacing=6, levels=1, threads=1, solver="lbfgs", interpolation="linear", max_iterations=300,
              psf_sigma_px=2.0, interfaces=InterfaceMotion(z_px=20.0, displacement_px=1.2))
    calls = []
    real = gn.compiled_criterion

    def counted(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(gn, "compiled_criterion", counted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the iteration cap: both routes alike
        fast = correlate_global(ref, dfm, **kw)
        assert calls  # the compiled criterion ran
        monkeypatch.setattr(gn, "compiled_criterion", lambda *a: None)  # torch's autograd
        slow = correlate_global(ref, dfm, **kw)
    its = [f.notes["levels"][-1]["iterations"] for f in (fast, slow)]
    assert max(its) < 300, its
    d = np.abs(fast.displacement_zyx_px - slow.displacement_zyx_px)
    d = d[fast.status == NodeStatus.CONVERGED]
    assert np.median(d) < 0.01 and np.percentile(d, 95) < 0.03, (np.median(d), np.percentile(d, 95))
    obj = [f.notes["levels"][-1]["objective"] for f in (fast, slow)]
    assert obj[0] == pytest.approx(obj[1], rel=0.01)
    assert np.median(np.abs(fast.displacement_zyx_px[:, 0] - 0.06 * fast.positions_zyx_px[:, 0])) < 0.2
