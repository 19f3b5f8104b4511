import numpy as np
import pytest
from quality_synth import two_phase

from tomo4d import InputError
from tomo4d.quality import cnr, cnr_classes


def _classes(n=128):
    fg = np.zeros((n, n), bool)
    fg[:, n // 2:] = True
    return fg, ~fg


def test_definitions_exact():
    img = two_phase(contrast=2.0, noise=0.0)
    rng = np.random.default_rng(3)
    fg, bg = _classes()
    img[bg] += rng.normal(0, 0.5, bg.sum())
    img[fg] += rng.normal(0, 0.2, fg.sum())
    d = abs(img[fg].astype(float).mean() - img[bg].astype(float).mean())
    sf, sb = img[fg].astype(float).std(), img[bg].astype(float).std()
    assert cnr(img, fg, bg) == pytest.approx(d / sb, rel=1e-6)
    assert cnr(img, fg, bg, noise="pooled") == pytest.approx(d / np.sqrt((sf ** 2 + sb ** 2) / 2), rel=1e-6)
    assert cnr(img, fg, bg, noise="sum") == pytest.approx(d / np.hypot(sf, sb), rel=1e-6)
    assert cnr(img, bg, fg) == pytest.approx(d / sf, rel=1e-6)  # symmetric in the difference


@pytest.mark.parametrize("contrast,noise", [(1.0, 0.1), (2.4, 1.0), (0.9, 1.0)])
def test_otsu_classes_recover_true_cnr(contrast, noise):
    # true CNR = contrast / noise; Otsu classes (eroded 2 px) must give it within 5 % when separable
    img = two_phase(256, contrast=contrast, noise=noise)
    classes = cnr_classes(img)
    if contrast / noise < 1.5:  # overlapping classes: Otsu splits noise, CNR is biased, but finite
        assert cnr(img, classes.foreground, classes.background) > 0
        return
    assert cnr(img, classes.foreground, classes.background) == pytest.approx(contrast / noise, rel=0.05)
    assert classes.threshold == pytest.approx(contrast / 2, abs=0.1 * contrast)


def test_labels():
    img = two_phase(contrast=1.0, noise=0.1)
    labels = np.zeros(img.shape, np.int32)
    labels[:, 64:] = 2
    labels[:, :10] = 5
    fg, bg = _classes()
    bg[:, :10] = False
    assert cnr(img, 2, 0, labels=labels) == pytest.approx(cnr(img, fg, bg))
    assert cnr(img, 2, [0, 5], labels=labels) == pytest.approx(cnr(img, fg, ~fg))
    c = cnr_classes(img, method="labels", labels=labels, foreground_labels=2, background_labels=[0, 5], erode_px=0)
    assert (c.foreground == fg).all() and c.threshold is None
    with pytest.raises(InputError, match="no pixel of labels"):
        cnr(img, 7, 0, labels=labels)


def test_monotonic_in_noise_and_volume_mask():
    vals = [cnr(two_phase(contrast=1, noise=s), *_classes()) for s in (0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    vol = np.stack([two_phase(contrast=1, noise=0.1, seed=k) for k in range(3)])
    fg, bg = _classes()
    assert cnr(vol, fg, bg) == pytest.approx(10, rel=0.05)  # 2D masks apply to every slice


def test_bad_inputs():
    img = two_phase()
    fg, bg = _classes()
    with pytest.raises(InputError, match="no pixel"):
        cnr(img, np.zeros_like(fg), bg)
    with pytest.raises(InputError, match="shape"):
        cnr(img, fg[:10], bg)
    with pytest.raises(InputError, match="overlap"):
        cnr(img, fg, np.ones_like(fg))
    with pytest.raises(InputError, match="constant"):
        cnr(np.where(fg, 1.0, 0.0), fg, bg)
    with pytest.raises(InputError, match="constant"):
        cnr_classes(np.ones((20, 20)))
    with pytest.raises(InputError, match="noise"):
        cnr(img, fg, bg, noise="rms")
