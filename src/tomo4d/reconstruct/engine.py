"""The glue to the engine, algotom (Apache-2.0; `pip install tomo4d[reconstruct]`).

Every numerical step here is algotom's: stripe (ring) removal, the Vo centre search, the Fresnel
(Paganin) filter and the FBP.  What this module adds is the conventions: sinograms are
``(angle, column)`` float32 transmissions, angles in degrees, the centre a detector column.
The engine was chosen by measurement (benchmarks/RESULTS.md, issue 22).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..errors import InputError

ENGINE = "algotom"


def engine_modules():
    """algotom's modules, or a clear error naming the extra that installs it."""
    try:
        from algotom.prep import calculation, filtering, removal
        from algotom.rec import reconstruction
    except ImportError:
        raise InputError("reconstruction needs the algotom package; install it with "
                         "`pip install tomo4d[reconstruct]` (or `pip install algotom`)") from None
    return calculation, filtering, removal, reconstruction


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{ENGINE} {version(ENGINE)}"
    except PackageNotFoundError:
        return f"{ENGINE} (version unknown)"


def remove_rings(transmission: np.ndarray, method: str, size: int) -> np.ndarray:
    """Stripe removal on a transmission sinogram ``(angle, column)`` (algotom works on transmissions)."""
    if method == "none":
        return transmission
    _, _, removal, _ = engine_modules()
    if method == "sorting":
        out = removal.remove_stripe_based_sorting(transmission, size)
    elif method == "filtering":
        out = removal.remove_stripe_based_filtering(transmission, 3, size)
    elif method == "normalization":
        out = removal.remove_stripe_based_normalization(transmission, max(size // 2, 3))
    elif method == "wavelet":
        out = removal.remove_stripe_based_wavelet_fft(transmission, 4, 1, "db9")
    else:  # "all"
        out = removal.remove_all_stripe(transmission, 3.0, max(2 * size + 1, 51), size)
    return np.asarray(out, dtype=np.float32)


def paganin(transmission: np.ndarray, ratio: float, pad: int) -> np.ndarray:
    """Paganin low-pass of one projection's transmission ``(rows, cols)``; ``ratio`` in pixel units.

    The image is edge-padded here (``pad`` pixels) and the window built on the padded grid, so the
    filter's frequencies are those of the array it multiplies (algotom pads the window by edge copy).
    """
    _, filtering, _, _ = engine_modules()
    padded = np.pad(transmission, pad, mode="edge")
    window = filtering.make_fresnel_window(padded.shape[0], padded.shape[1], ratio, 2)
    out = filtering.fresnel_filter(padded, ratio, dim=2, window=window, pad=0, apply_log=False)
    return np.asarray(out[pad:pad + transmission.shape[0], pad:pad + transmission.shape[1]], dtype=np.float32)


#: the coarse stage of the centre search works on a sinogram downsampled to about this many columns and angles
COARSE_SIZE = 256


def find_center(sinogram: np.ndarray, search: float, *, coarse_size: int | None = None) -> float:
    """Rotation axis (detector column) of a 180-degree attenuation sinogram: Vo's method, 0.25 px steps.

    ``coarse_size`` defaults to :data:`COARSE_SIZE`.  Below ``2 * coarse_size`` columns and angles this is algotom's ``find_center_vo`` (integer steps over
    +-``search`` columns about the middle, then 0.25 px steps within 4 px).  Above, its integer search over the
    whole window would cost ``2 * search`` full-size evaluations of the metric (23 min wall, ~5 CPU min for
    3 rows at 1024^2), so the same metric (algotom's ``coarse_search_cor``/``fine_search_cor``) is searched
    coarse to fine: (1) integer steps over the window on the sinogram averaged down to about ``coarse_size``
    columns and angles (``downsample_cor``, after algotom's own (3, 1) smoothing); (2) 0.5 px steps on the
    full sinogram within one coarse column of that; (3) 0.25 px steps within 0.5 px of that.  Half-pixel
    centres shift the flipped sinogram by whole columns (cheap); every stage keeps all the angles at full
    resolution except (1): averaging angles low-passes exactly the energy outside the double wedge that the
    metric measures (measured: 0.25 px steps on 4x averaged angles err up to 0.85 px at 1024^2).
    """
    calculation, _, _, _ = engine_modules()
    sino = np.ascontiguousarray(sinogram, dtype=np.float32)
    nrow, ncol = sino.shape
    mid = (ncol - 1) / 2.0
    start, stop = max(int(np.floor(mid - search)), 1), min(int(np.ceil(mid + search)), ncol - 2)
    size = COARSE_SIZE if coarse_size is None else int(coarse_size)
    d_col, d_row = max(ncol // size, 1), max(nrow // size, 1)
    if d_col == 1 and d_row == 1:
        return float(calculation.find_center_vo(sino, start=start, stop=stop, step=0.25, ncore=1))
    from scipy import ndimage

    small = calculation.downsample_cor(ndimage.gaussian_filter(sino, (3, 1), mode="reflect"), d_row, d_col)
    raw = calculation.coarse_search_cor(small, int(np.floor(start / d_col)), int(np.ceil(stop / d_col)),
                                        denoise=False, ncore=1)
    coarse = raw * d_col + (d_col - 1) / 2.0  # the centre of the d_col columns averaged into column `raw`
    half = np.round(2.0 * coarse) / 2.0  # on the half-pixel grid: whole-column shifts only
    medium = calculation.fine_search_cor(sino, half, float(d_col), 0.5, denoise=True, ncore=1)
    return float(calculation.fine_search_cor(sino, float(medium), 0.5, 0.25, denoise=True, ncore=1))


@contextmanager
def one_numba_thread():
    """numba on one thread for the call, its previous count restored after (numba's setting is per thread).

    algotom 1.7's CPU back-projector (``back_projection_cpu``) adds into the image from a ``prange`` over the
    angles: with more than one numba thread the additions race (measured: errors up to 16 % of the image
    maximum with 2 threads, different each run), so the engine's FBP always runs on one thread here.
    """
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def fbp(sinograms: np.ndarray, center: float, angles_deg: np.ndarray, filter_name: str) -> np.ndarray:
    """Parallel-beam FBP of attenuation sinograms ``(angle, row, column)`` -> slices ``(row, y, x)``.

    algotom weights the back-projection by ``pi / (n - 1)``; the weight is rescaled to the actual mean
    angular step, so the values are attenuation per pixel whatever the angle list.  One sinogram at a time,
    each slice written into the output (algotom's 3D path holds the filtered slab, a ``(y, row, x)`` volume and
    its scaled copy, then the transposed copy: 3-4 slabs of slices more; the same operations, so the same
    values bit for bit), with the ramp window built once.
    """
    _, _, _, reconstruction = engine_modules()
    n, n_rows, ncol = sinograms.shape
    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    span = np.pi if n < 2 else float(np.ptp(angles)) * n / (n - 1)
    scale = np.float32((n - 1) / np.pi * span / n)
    name = None if filter_name == "ramp" else filter_name
    pad = min(int(0.15 * ncol), 150)  # algotom's default padding, given so that the window matches it
    ramp = reconstruction.make_2d_ramp_window(n, ncol + 2 * pad, name)
    out = np.empty((n_rows, ncol, ncol), np.float32)
    with one_numba_thread():
        for r in range(n_rows):
            rec = reconstruction.fbp_reconstruction(np.ascontiguousarray(sinograms[:, r, :], dtype=np.float32),
                                                    float(center), angles=angles.astype(np.float32), ratio=None,
                                                    ramp_win=ramp, filter_name=name, pad=pad, apply_log=False,
                                                    gpu=False, ncore=1)
            np.multiply(np.asarray(rec, dtype=np.float32), scale, out=out[r])
    return out
