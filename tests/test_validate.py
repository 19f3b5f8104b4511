"""The shared input checks of tomo4d._validate: labels and chunk-wise non-finite voxels."""

from __future__ import annotations

import numpy as np
import pytest

from tomo4d._validate import check_finite, check_finite_chunk, check_labels, show
from tomo4d.errors import InputError

PHASES = {0: "pore", 1: "matrix", 2: "silicon", 3: "lithiated_silicon", 4: "collector", 5: "separator"}


def _mask255(shape=(4, 8, 8)):
    a = np.zeros(shape, np.uint8)
    a[:, 2:4, 2:4] = 255
    a[:, 5:7, 5:7] = 255
    return a


@pytest.mark.parametrize("labels, kwargs, pattern", [
    (_mask255(), {"expected": PHASES, "role": "phase labels are expected"},
     r"labels holds values \{0, 255\}; phase labels are expected: 0 pore, 1 matrix.*values \{255\}"),
    (np.linspace(0.1, 0.9, 256).reshape(4, 8, 8).astype(np.float32), {},
     r"non-integer values.*grey-value image"),
    (np.full((4, 8, 8), -1, np.int16), {}, r"negative values \{-1\}"),
    (np.array([[[0.0, np.nan]]]), {}, r"1 non-finite"),
    (_mask255(), {"instances": True}, r"binary mask of 2 separate objects"),
    (np.zeros((4, 4, 4), np.uint8), {"shape": (4, 4, 5)}, r"shape \(4, 4, 4\).*\(4, 4, 5\)"),
    (np.zeros((4, 4), np.uint8), {"ndim": 3}, r"give a 3D label image"),
    (None, {}, r"labels=None is not a label image"),
    (np.array(["a", "b"]), {}, r"not a label type"),
])
def test_check_labels_refuses_what_cannot_be_labels(labels, kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        check_labels("labels", labels, **kwargs)


def test_check_labels_accepts_labels_and_integral_floats():
    a = np.array([[[0, 1], [2, 5]]], np.uint8)
    assert check_labels("labels", a, expected=PHASES) is not None
    out = check_labels("labels", a.astype(np.float32), expected=PHASES)
    assert np.issubdtype(out.dtype, np.integer) and np.array_equal(out, a)
    assert check_labels("m", a > 0).dtype == np.uint8
    one = np.zeros((4, 8, 8), np.uint8)
    one[1:3, 1:3, 1:3] = 7          # one particle, whatever its value
    assert check_labels("p", one, instances=True).max() == 7


def test_check_labels_summarises_many_values():
    a = np.arange(100, dtype=np.int32).reshape(1, 10, 10)
    with pytest.raises(InputError, match=r"100 distinct values from 0 to 99"):
        check_labels("labels", a, expected=PHASES)


def test_check_finite_chunk_names_the_z_range_and_first_slice():
    block = np.zeros((4, 3, 3), np.float32)
    block[2, 1, 1] = np.inf
    block[3, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"volume holds 2 non-finite .* z-slices 8..11 \(first at z = 10"):
        check_finite_chunk("volume", block, 8)
    check_finite_chunk("volume", np.zeros((2, 2, 2), np.uint16), 0)     # integers cannot be NaN


def test_check_finite_counts():
    a = np.ones((2, 3, 3))
    a[0, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"image holds 1 non-finite \(NaN/Inf\) voxels"):
        check_finite("image", a)


@pytest.mark.parametrize("value, text", [(np.float64(2.5), "2.5"), (np.int64(3), "3"),
                                         ((np.float64(50.0), np.float64(25.0)), "(50, 25)")])
def test_show_writes_no_numpy_repr(value, text):
    assert show(value) == text


def _nan_volume():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16, 16)).astype(np.float32)
    a[3, 4, 5:7] = np.nan
    return a


@pytest.mark.parametrize("stage", ["quality", "register", "dvc", "quantify", "neutron", "segment"])
def test_every_stage_refuses_nan_voxels_with_the_same_message(stage):
    a = _nan_volume()
    good = np.nan_to_num(a)
    if stage == "quality":
        from tomo4d.quality import psnr

        call, name = (lambda: psnr(good, a, data_range=1.0)), "image"
    elif stage == "register":
        from tomo4d.register import register

        call, name = (lambda: register(good, a, binning=(1,))), "moving"
    elif stage == "dvc":
        from tomo4d.dvc import noise_floor

        call, name = (lambda: noise_floor(good, a)), "scan_b"
    elif stage == "quantify":
        from tomo4d._validate import as_image

        call, name = (lambda: as_image(a, name="image")), "image"
    elif stage == "neutron":
        from tomo4d.neutron import (
            lithium_concentration,
            theoretical_lithium_calibration,
        )

        call, name = (lambda: lithium_concentration(a, theoretical_lithium_calibration())), "mu"
    else:
        from tomo4d.segment import predict_labels

        class _Model:          # prediction refuses the image before the model is used
            classes, features = (1, 2), None

        call, name = (lambda: predict_labels(_Model(), a)), "image"
    with pytest.raises(InputError, match=rf"^{name} holds 2 non-finite \(NaN/Inf\) voxels \(0.0488 % of 4096\); "
                                         r"tomo4d refuses them rather than guess"):
        call()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint32])
def test_present_values_equals_unique(dtype):
    from tomo4d._validate import present_values

    rng = np.random.default_rng(3)
    a = rng.choice([0, 2, 5, 200], size=(7, 9, 11)).astype(dtype)
    got = present_values(a)
    np.testing.assert_array_equal(got, np.unique(a))
    assert got.dtype == a.dtype
    assert present_values(a[:0]).size == 0
