"""Synthetic projections with known truth: a phantom volume forward-projected (skimage radon, parallel
beam), flats, darks, Poisson noise, detector stripes and an off-centre rotation axis; and a
propagation-based phase-contrast projection for the Paganin check.  Not the engine: the forward
model is independent of the reconstruction (no inverse crime: projected at twice the resolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import check_int, check_number
from .options import HC_KEV_NM
from .readers import Projections


@dataclass(frozen=True, eq=False)
class SimulatedScan:
    """Counts ``projections (n, rows, cols)``, ``flats``/``darks`` stacks, the truth and the axis.

    ``truth`` is ``(rows, W, W)`` attenuation per detector pixel; ``center`` the true axis column;
    ``clean`` the noise- and stripe-free transmissions; ``stripe_columns`` the bad detector columns.
    """

    projections: np.ndarray
    flats: np.ndarray
    darks: np.ndarray
    angles_deg: np.ndarray
    truth: np.ndarray
    center: float
    clean: np.ndarray
    stripe_columns: np.ndarray
    pixel_size_nm: float

    def as_projections(self, *, clean: bool = False) -> Projections:
        """The scan as :class:`Projections` (``clean``: noise-free transmissions, no flats/darks)."""
        if clean:
            return Projections(self.clean, None, None, None, self.angles_deg, self.pixel_size_nm, "simulated clean")
        return Projections(self.projections, None, self.flats.mean(0), self.darks.mean(0), self.angles_deg,
                           self.pixel_size_nm, "simulated")


def cells_phantom(shape, *, seed: int = 0, n_particles: int | None = None, fill: float = 0.7,
                  matrix: float = 0.02, particle: float = 0.06, radius=(0.02, 0.06)) -> np.ndarray:
    """``(z, W, W)`` attenuation per pixel at twice the resolution of ``shape`` (z, W): an electrode-like
    cylinder (``matrix``) of ``fill`` times the width, with spherical particles (``particle``) and pores (0) of
    radii ``radius`` (fractions of the width)."""
    nz, w = check_int("shape z", shape[0], minimum=1), check_int("shape width", shape[1], minimum=16)
    rng = np.random.default_rng(seed)
    f = 2 * w
    zz = (np.arange(2 * nz) + 0.5) / 2.0
    y, x = np.mgrid[:f, :f] - (f - 1) / 2.0
    out = np.zeros((2 * nz, f, f), np.float32)
    out[:, np.hypot(y, x) < fill * f / 2] = matrix
    n = n_particles if n_particles is not None else max(int(0.6 * nz * (fill * w) ** 2 / 64), 8)
    for _ in range(n):
        r = rng.uniform(*radius) * f
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, fill * f / 2 - r)
        cz = rng.uniform(0, nz)
        value = particle if rng.random() < 0.8 else 0.0
        for k in np.flatnonzero(np.abs(zz - cz) < r / 2):
            rr = np.sqrt(max(r**2 - (2 * (zz[k] - cz)) ** 2, 0.0))
            out[k][np.hypot(y - d * np.sin(a), x - d * np.cos(a)) < rr] = value
    return out


def simulate_scan(shape=(8, 96), *, n_angles: int = 180, center_offset: float = 0.0, photons: float = 1e4,
                  n_stripes: int = 0, stripe_gain: float = 0.03, n_flats: int = 10, n_darks: int = 5,
                  dark_level: float = 100.0, margin: int = 24, pixel_size_nm: float = 1000.0, seed: int = 0,
                  psf_px: float = 0.0, phantom: np.ndarray | None = None) -> SimulatedScan:
    """Projections of :func:`cells_phantom` (or ``phantom`` at twice the resolution) with flats, darks, noise.

    The detector is ``ncol = W + 2 * margin`` columns; the axis sits at column ``(ncol - 0.5) / 2 + center_offset``
    (radon's axis is the fine pixel ``ncol`` of the twice finer grid, whose centre is a quarter of a detector
    pixel left of the detector's middle; the truth grid shares that quarter-pixel offset from the axis)
    (|offset| must stay under ``margin``).  ``photons`` per pixel in the flat (Poisson), ``n_stripes`` detector
    columns whose gain drifted by +-``stripe_gain`` after the flats were taken (the flat
    correction leaves them: stripes, rings); ``psf_px`` a Gaussian detector blur, angles over [0, 180) without end point.
    """
    from scipy.ndimage import gaussian_filter
    from scipy.ndimage import shift as nd_shift
    from skimage.transform import radon

    check_number("center_offset", abs(center_offset), maximum=margin - 2)
    fine = cells_phantom(shape, seed=seed) if phantom is None else np.asarray(phantom, np.float32)
    nz2, f, _ = fine.shape
    nz, w = nz2 // 2, f // 2
    ncol = w + 2 * margin
    truth = fine.reshape(nz, 2, w, 2, w, 2).mean(axis=(1, 3, 5))
    theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
    sino = np.zeros((n_angles, nz, ncol), np.float32)
    padded = np.zeros((2 * ncol, 2 * ncol), np.float32)
    for k in range(nz):
        padded[2 * margin:2 * margin + f, 2 * margin:2 * margin + f] = fine[2 * k] + fine[2 * k + 1]
        s = radon(padded, theta=theta, circle=True).T  # (angles, 2 ncol), axis at column ncol (radon is linear)
        s = s.reshape(n_angles, ncol, 2).sum(axis=2) / 8.0  # mean of 2x2x2 fine rays, pixel = 2 fine
        sino[:, k] = nd_shift(s, (0, center_offset), order=3, mode="constant") if center_offset else s
    if psf_px:  # detector blur (Gaussian sigma, px) along rows and columns
        sino = gaussian_filter(sino, (0, psf_px, psf_px)).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    clean = np.exp(-np.maximum(sino, 0.0)).astype(np.float32)
    gain = np.ones((nz, ncol), np.float32)
    cols = rng.choice(np.arange(margin + w // 8, margin + w - w // 8), n_stripes, replace=False) if n_stripes else \
        np.array([], int)
    gain[:, cols] += rng.choice([-1.0, 1.0], len(cols)) * stripe_gain
    flats = rng.poisson(photons, (n_flats, nz, ncol)).astype(np.float32) + dark_level
    darks = rng.poisson(dark_level, (n_darks, nz, ncol)).astype(np.float32)
    counts = rng.poisson(photons * gain * clean).astype(np.float32) + rng.poisson(dark_level, clean.shape)
    return SimulatedScan(projections=counts, flats=flats, darks=darks, angles_deg=theta, truth=truth,
                         center=(ncol - 0.5) / 2 + float(center_offset), clean=clean, stripe_columns=np.sort(cols),
                         pixel_size_nm=float(pixel_size_nm))


def phase_contrast_projection(thickness_a_nm: np.ndarray, thickness_b_nm: np.ndarray, *, beta_a: float,
                              beta_b: float, delta_beta: float, energy_kev: float, distance_m: float,
                              pixel_size_nm: float, oversample: int = 4) -> np.ndarray:
    """Intensity (flat = 1) of a two-material object after free-space propagation (Fresnel, paraxial).

    The exit wave is ``exp(-k (beta - i delta) T)`` summed over materials (``delta = delta_beta * beta``),
    propagated by ``distance_m`` with the Fresnel kernel on a grid ``oversample`` times finer, then binned.
    """
    from scipy.ndimage import zoom

    lam = HC_KEV_NM / energy_kev
    k = 2 * np.pi / lam
    ta = zoom(np.asarray(thickness_a_nm, np.float64), oversample, order=1)
    tb = zoom(np.asarray(thickness_b_nm, np.float64), oversample, order=1)
    phase = -k * delta_beta * (beta_a * ta + beta_b * tb)
    amp = np.exp(-k * (beta_a * ta + beta_b * tb))
    pad = [(s // 2, s // 2) for s in ta.shape]
    wave = np.pad(amp * np.exp(1j * phase), pad, mode="edge")
    p = pixel_size_nm / oversample
    fy = np.fft.fftfreq(wave.shape[0], d=p)[:, None]
    fx = np.fft.fftfreq(wave.shape[1], d=p)[None, :]
    prop = np.exp(-1j * np.pi * lam * distance_m * 1e9 * (fx**2 + fy**2))
    out = np.abs(np.fft.ifft2(np.fft.fft2(wave) * prop)) ** 2
    out = out[pad[0][0]:pad[0][0] + ta.shape[0], pad[1][0]:pad[1][0] + ta.shape[1]]
    h, w = out.shape[0] // oversample, out.shape[1] // oversample
    return out[:h * oversample, :w * oversample].reshape(h, oversample, w, oversample).mean(axis=(1, 3))


def save_nxtomo(scan: SimulatedScan, path, *, overwrite: bool = False):
    """Write ``scan`` as an NXtomo file (darks, flats, projections with image_key 2, 1, 0; angles in degrees;
    x_pixel_size in m), atomically.  Returns the path."""
    import h5py

    from ..io import atomic_output

    stack = np.concatenate([scan.darks, scan.flats, scan.projections])
    stack = np.clip(np.rint(stack), 0, 65535).astype(np.uint16)
    keys = np.r_[np.full(len(scan.darks), 2), np.full(len(scan.flats), 1), np.zeros(len(scan.projections))]
    angles = np.r_[np.zeros(len(scan.darks) + len(scan.flats)), scan.angles_deg]
    with atomic_output(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as h5:
            entry = h5.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry["definition"] = "NXtomo"
            det = h5.create_group("entry/instrument/detector")
            det.create_dataset("data", data=stack, chunks=(1, *stack.shape[1:]))
            det["image_key"] = keys.astype(np.int32)
            det["x_pixel_size"] = scan.pixel_size_nm * 1e-9
            det["x_pixel_size"].attrs["units"] = "m"
            h5["entry/sample/rotation_angle"] = angles
            h5["entry/sample/rotation_angle"].attrs["units"] = "degree"
    return path
