import numpy as np
import pytest


@pytest.mark.realdata
def test_snow_particle_statistics_match_regionprops(real_file):
    """Otsu + tomo4d particle splitting on the real snow volume; our table equals regionprops."""
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops

    from tomo4d.io import open_volume
    from tomo4d.quantify import particle_properties, size_distribution
    from tomo4d.segment import label_particles

    vol = open_volume(real_file("snow_xct_100.tif"))
    img = vol.numpy().astype(np.float32)
    mask = img > threshold_otsu(img)
    vs = (100.0, 80.0, 80.0)  # anisotropic on purpose: spacing must be honoured identically
    parts = label_particles(mask, voxel_size_nm=vs, min_volume_nm3=27 * float(np.prod(vs)))
    assert parts.n_particles >= 5
    t = particle_properties(parts.labels, voxel_size_nm=vs)
    rp = regionprops(parts.labels, spacing=vs)
    assert np.array_equal([p.label for p in rp], t.label)
    assert np.allclose([p.area / 1e9 for p in rp], t.volume_um3, rtol=1e-12)
    assert np.allclose([p.equivalent_diameter_area / 1e3 for p in rp], t.equivalent_diameter_um, rtol=1e-9)
    assert np.allclose(np.array([p.centroid for p in rp]) / 1e3, t.centroid_um, atol=1e-9)
    bb = np.array([p.bbox for p in rp])
    assert np.array_equal(bb[:, :3], t.bbox_min_px) and np.array_equal(bb[:, 3:], t.bbox_max_px)
    assert np.allclose(parts.volumes_nm3 / 1e9, t.volume_um3)
    assert np.all((t.sphericity > 0.05) & (t.sphericity < 1.3))
    assert size_distribution(t, include_border=True).n_particles == len(t)
