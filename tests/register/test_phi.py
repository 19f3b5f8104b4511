"""Phi algebra: composition, inversion, recentring, decomposition, application to points and images."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d import Volume
from tomo4d.errors import InputError
from tomo4d.register import (
    apply_phi,
    apply_phi_to_points,
    compose_phi,
    decompose_phi,
    invert_phi,
    make_phi,
    recentre_phi,
    rotation_matrix,
    rotation_vector_deg,
)
from tomo4d.register.phi import polar_decomposition

PHIS = [
    dict(translation_px=(1.5, -2.0, 0.25)),
    dict(rotation_deg=(0.0, 0.0, 30.0)),
    dict(translation_px=(0.3, 0.1, -4.0), rotation_deg=(5.0, -10.0, 2.0), strain=(0.05, -0.02, 0.1)),
    dict(stretch=np.array([[1.1, 0.02, 0.0], [0.02, 0.95, 0.01], [0.0, 0.01, 1.0]]), rotation_deg=(1, 2, 3)),
]


@pytest.mark.parametrize("kw", PHIS)
def test_make_decompose_roundtrip(kw):
    phi = make_phi(**kw)
    parts = decompose_phi(phi)
    np.testing.assert_allclose(parts.translation_px, kw.get("translation_px", (0, 0, 0)), atol=1e-12)
    np.testing.assert_allclose(parts.rotation_deg, kw.get("rotation_deg", (0, 0, 0)), atol=1e-9)
    if "strain" in kw:
        np.testing.assert_allclose(np.diag(parts.stretch), 1 + np.asarray(kw["strain"]), atol=1e-12)
    np.testing.assert_allclose(parts.rotation @ parts.stretch, parts.F, atol=1e-12)
    assert parts.volumetric_strain == pytest.approx(np.linalg.det(phi[:3, :3]) - 1, abs=1e-12)


@pytest.mark.parametrize("kw", PHIS)
def test_invert_and_compose(kw):
    phi = make_phi(**kw)
    np.testing.assert_allclose(compose_phi(phi, invert_phi(phi)), np.eye(4), atol=1e-12)
    pts = np.random.default_rng(0).uniform(-20, 20, (10, 3))
    c = np.array([3.0, -1.0, 7.0])
    other = make_phi(translation_px=(1, 2, 3), rotation_deg=(0, 4, 0))
    both = apply_phi_to_points(apply_phi_to_points(pts, other, centre=c), phi, centre=c)
    np.testing.assert_allclose(apply_phi_to_points(pts, compose_phi(phi, other), centre=c), both, atol=1e-10)


def test_recentre_keeps_mapping():
    phi = make_phi(translation_px=(1, 2, 3), rotation_deg=(10, 0, 5), strain=(0.1, 0, 0))
    pts = np.random.default_rng(1).uniform(0, 50, (8, 3))
    a, b = np.array([10.0, 20, 30]), np.array([-5.0, 0, 12])
    moved = recentre_phi(phi, a, b)
    np.testing.assert_allclose(apply_phi_to_points(pts, phi, centre=a), apply_phi_to_points(pts, moved, centre=b),
                               atol=1e-10)


def test_rotation_vector_roundtrip_and_sense():
    w = np.array([3.0, -7.0, 11.0])
    np.testing.assert_allclose(rotation_vector_deg(rotation_matrix(w)), w, atol=1e-10)
    # right-handed: +90 degrees about z turns x into y, y into -x; orthonormal
    r = rotation_matrix((90.0, 0, 0))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(r @ [0, 0, 1], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(r @ [0, 1, 0], [0, 0, -1], atol=1e-12)


def test_polar_decomposition_batch():
    f = np.stack([make_phi(rotation_deg=(i, 2 * i, 0), strain=(0.01 * i, 0, 0.02))[:3, :3] for i in range(4)])
    r, u = polar_decomposition(f)
    np.testing.assert_allclose(r @ u, f, atol=1e-12)
    np.testing.assert_allclose(u, np.swapaxes(u, -1, -2), atol=1e-12)


@pytest.mark.parametrize("shift", [(2.0, 0.0, 0.0), (0.0, -3.0, 1.0)])
def test_apply_phi_integer_translation_is_a_shift(texture, shift):
    out = apply_phi(texture, make_phi(translation_px=shift), order=3)
    s = [int(v) for v in shift]
    # out[x] = texture[x + t]
    ref = np.roll(texture, [-v for v in s], axis=(0, 1, 2))
    core = tuple(slice(4, -4) for _ in range(3))
    np.testing.assert_allclose(out[core], ref[core], atol=1e-4)


def test_apply_phi_volume_in_volume_out(texture):
    vol = Volume(texture, (50.0, 50.0, 50.0))
    out = apply_phi(vol, make_phi(translation_px=(0.5, 0, 0)))
    assert isinstance(out, Volume) and out.voxel_size_nm == vol.voxel_size_nm and out.shape == vol.shape
    small = apply_phi(texture, np.eye(4), output_shape=(10, 12, 14), centre=(0, 0, 0))
    np.testing.assert_allclose(small, texture[:10, :12, :14], atol=1e-5)


@pytest.mark.parametrize("bad", [np.eye(3), np.full((4, 4), np.nan), np.ones((4, 4))])
def test_bad_phi_rejected(texture, bad):
    with pytest.raises(InputError, match="phi"):
        apply_phi(texture, bad)


def test_bad_order_and_make_phi_conflicts(texture):
    with pytest.raises(InputError, match="order"):
        apply_phi(texture, np.eye(4), order=7)
    with pytest.raises(InputError, match="either"):
        make_phi(F=np.eye(3), strain=(0.1, 0, 0))


# -- wrong inputs name their parameter -------------------------------------------------------

BAD_PHIS = ["phi", b"x", {"a": 1}, [["a"] * 4] * 4]  # (None and wrong shapes were already refused by name)


@pytest.mark.parametrize("bad", BAD_PHIS, ids=lambda b: type(b).__name__ + str(np.shape(b)))
def test_phi_functions_refuse_a_bad_phi_by_name(bad):
    vol = np.zeros((4, 4, 4), np.float32)
    calls = [
        ("phi", lambda: apply_phi(vol, bad)),
        ("phi", lambda: invert_phi(bad)),
        ("phi", lambda: decompose_phi(bad)),
        ("phi", lambda: apply_phi_to_points(np.zeros((2, 3)), bad)),
        ("phi", lambda: recentre_phi(bad, (0, 0, 0), (1, 1, 1))),
        ("a", lambda: compose_phi(bad, np.eye(4))),
        ("b", lambda: compose_phi(np.eye(4), bad)),
        ("phi0", lambda: __import__("tomo4d.register.phi", fromlist=["check_phi"]).check_phi(bad, name="phi0")),
    ]
    for name, call in calls:
        with pytest.raises(InputError) as exc:
            call()
        msg = str(exc.value)
        assert msg.startswith(name), msg
        assert "np." not in msg and "array(" not in msg, msg


@pytest.mark.parametrize("call,name", [
    (lambda: apply_phi("volume", np.eye(4)), "image"),
    (lambda: apply_phi(None, np.eye(4)), "image"),
    (lambda: apply_phi(np.zeros((4, 4, 4)), np.eye(4), order=np.float64(2.5)), "order"),
    (lambda: apply_phi(np.zeros((4, 4, 4)), np.eye(4), output_shape=(np.int64(4), 0, 4)), "output_shape"),
    (lambda: apply_phi(np.zeros((4, 4, 4)), np.eye(4), output_shape="444"), "output_shape"),
    (lambda: apply_phi(np.zeros((4, 4, 4)), np.eye(4), centre="middle"), "centre"),
    (lambda: apply_phi(np.zeros((4, 4, 4)), np.stack([np.eye(4)] * 2)), "phi"),
    (lambda: apply_phi_to_points("points", np.eye(4)), "points_zyx"),
    (lambda: apply_phi_to_points(np.zeros((2, 2)), np.eye(4)), "points_zyx"),
    (lambda: apply_phi_to_points(np.zeros((2, 3)), np.eye(4), centre=(1, 2)), "centre"),
    (lambda: recentre_phi(np.eye(4), "c", (1, 1, 1)), "old_centre"),
    (lambda: recentre_phi(np.eye(4), (0, 0, 0), None), "new_centre"),
    (lambda: make_phi(translation_px="up"), "translation_px"),
    (lambda: make_phi(translation_px=(np.float64(1.0), 2.0)), "translation_px"),
    (lambda: make_phi(rotation_deg="30"), "rotation_deg"),
    (lambda: make_phi(stretch="x"), "stretch"),
    (lambda: make_phi(strain=np.zeros(5)), "strain"),
    (lambda: make_phi(F="identity"), "F"),
    (lambda: rotation_matrix(None), "rotation_deg"),
    (lambda: rotation_matrix((1.0, 2.0)), "rotation_deg"),
    (lambda: rotation_vector_deg("R"), "rotation"),
    (lambda: rotation_vector_deg(np.eye(4)), "rotation"),
    (lambda: polar_decomposition("F"), "F"),
])
def test_phi_helpers_name_the_bad_parameter(call, name):
    with pytest.raises(InputError) as exc:
        call()
    msg = str(exc.value)
    assert msg.startswith(name), msg
    assert "np." not in msg and "array(" not in msg, msg


def test_check_phi_last_row_message_is_plain():
    bad = np.eye(4)
    bad[3, 0] = np.float64(0.5)
    with pytest.raises(InputError) as exc:
        invert_phi(bad)
    assert "last row is [0.5, 0, 0, 1]" in str(exc.value)
