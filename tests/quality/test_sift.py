import numpy as np
import pytest
from quality_synth import texture
from scipy import ndimage

from tomo4d import InputError
from tomo4d.quality import sift_matches


@pytest.fixture(scope="module")
def blobs():
    return texture(160, seed=4)


def test_identical_images_match_almost_all(blobs):
    r = sift_matches(blobs, blobs)
    assert r.n_keypoints_reference == r.n_keypoints_image > 20
    assert r.n_matches >= 0.9 * r.n_keypoints_reference
    assert r.matches.shape == (r.n_matches, 5)
    np.testing.assert_allclose(r.matches[:, 1:3], r.matches[:, 3:5])  # each feature matched to itself


def test_monotonic_in_blur_and_noise(blobs):
    blur = [sift_matches(blobs, ndimage.gaussian_filter(blobs, s)).n_matches for s in (0.5, 1.5, 3)]
    assert blur[0] > blur[1] > blur[2]
    rng = np.random.default_rng(0)
    noise = [sift_matches(blobs, blobs + rng.normal(0, s, blobs.shape)).n_matches for s in (0.01, 0.05, 0.2)]
    assert noise[0] > noise[1] > noise[2]


def test_geometric_verification_and_cap(blobs):
    shifted = np.roll(blobs, (3, -2), axis=(0, 1))
    r = sift_matches(blobs, shifted, model="euclidean")
    assert r.n_matches <= r.n_ratio_matches and r.n_matches > 10 and r.model == "euclidean"
    d = r.matches[:, 3:5] - r.matches[:, 1:3]
    np.testing.assert_allclose(np.median(d, axis=0), [3, -2], atol=0.5)
    rng = np.random.default_rng(1)
    scrambled = rng.permutation(blobs.ravel()).reshape(blobs.shape)
    assert sift_matches(blobs, ndimage.gaussian_filter(scrambled, 3), model="similarity").n_matches <= 3
    capped = sift_matches(blobs, blobs, n_keypoints=10)
    assert capped.n_keypoints_reference == 10 and capped.n_matches <= 10


def test_volume_slices(blobs):
    vol = np.stack([blobs, blobs.T, blobs[::-1]])
    r = sift_matches(vol, vol, slices=[0, 2])
    assert r.slices == (0, 2) and len(r.per_slice) == 2 and r.n_matches == sum(r.per_slice)


def test_bad_inputs(blobs):
    with pytest.raises(InputError, match="shape"):
        sift_matches(blobs, blobs[:-3])
    with pytest.raises(InputError, match="constant"):
        sift_matches(np.ones((64, 64)), blobs[:64, :64])
    with pytest.raises(InputError, match="ratio"):
        sift_matches(blobs, blobs, ratio=1.5)
    with pytest.raises(InputError, match="model"):
        sift_matches(blobs, blobs, model="homography")
