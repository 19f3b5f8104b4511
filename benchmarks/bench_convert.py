"""Benchmark: stream a 1024^3 uint16 slice folder to OME-Zarr and back, with peak memory.

Each conversion runs in its own Python process so that its peak resident memory
(``ru_maxrss``) is its own.  The baseline, measured in the same run, is the naive
approach (read the whole folder into memory with tifffile, then write it).

Usage::

    python benchmarks/bench_convert.py [--size 1024] [--workdir benchmarks/_work]

Prints one line per step and a summary with ratios; target: peak RSS < 1 GiB for
the streamed conversions of a 2 GiB volume.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
mode, src, dst = sys.argv[1:4]
if mode == "stream":
    from tomo4d.io import convert
    convert(src, dst)
else:  # naive baseline: whole volume in memory
    import numpy as np, tifffile, zarr
    from pathlib import Path
    files = sorted(Path(src).glob("*.tif"))
    vol = tifffile.imread(files)
    arr = zarr.create_array(dst, shape=vol.shape, dtype=vol.dtype, chunks=(64, 256, 256))
    arr[:] = vol
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_slices(folder: Path, n: int) -> None:
    """Write an n^3 uint16 slice folder with particle-like texture, slab by slab."""
    import dask.array as da
    import numpy as np

    from tomo4d import Volume
    from tomo4d.io import save_volume

    def block(block_info=None):
        loc = block_info[None]["array-location"]
        z0, z1 = loc[0]
        z = np.arange(z0, z1, dtype=np.float32)[:, None, None]
        y = np.arange(n, dtype=np.float32)[None, :, None]
        x = np.arange(n, dtype=np.float32)[None, None, :]
        img = 20000 + 8000 * np.sin(z / 7.0) * np.cos(y / 11.0) * np.sin(x / 5.0)
        noise = np.random.default_rng(z0).normal(0, 500, img.shape)
        return (img + noise).astype(np.uint16)

    arr = da.map_blocks(block, dtype=np.uint16, chunks=((32,) * (n // 32), (n,), (n,)))
    save_volume(Volume(arr, 50.0), folder)


def run_child(mode: str, src: Path, dst: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workdir", default=str(Path(__file__).parent / "_work"))
    args = ap.parse_args()
    work = Path(args.workdir) / f"convert_{args.size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n = args.size
    gib = n**3 * 2 / 2**30
    t0 = time.perf_counter()
    make_slices(work / "slices", n)
    print(f"made {n}^3 uint16 slice folder ({gib:.2f} GiB) in {time.perf_counter() - t0:.1f} s")
    steps = [
        ("slices -> ome.zarr (tomo4d, streamed)", "stream", work / "slices", work / "v.ome.zarr"),
        ("ome.zarr -> slices (tomo4d, streamed)", "stream", work / "v.ome.zarr", work / "back"),
        ("slices -> zarr (naive, in memory)", "naive", work / "slices", work / "naive.zarr"),
    ]
    res = {}
    for name, mode, src, dst in steps:
        r = run_child(mode, src, dst)
        res[name] = r
        print(f"{name:<40} wall {r['wall_s']:7.1f} s   peak RSS {r['peak_rss_mib']:8.0f} MiB")
    import numpy as np
    import tifffile

    a = tifffile.imread(sorted((work / "slices").glob("*.tif"))[n // 2])
    b = tifffile.imread(sorted((work / "back").glob("*.tif"))[n // 2])
    print(f"round trip identical (middle slice): {bool(np.array_equal(a, b))}")
    s, naive = res[steps[0][0]], res[steps[2][0]]
    print(f"streamed/naive peak RSS ratio: {s['peak_rss_mib'] / naive['peak_rss_mib']:.3f}; "
          f"wall ratio {s['wall_s'] / naive['wall_s']:.2f}")
    print(f"target peak RSS < 1024 MiB: {'met' if max(res[k]['peak_rss_mib'] for k in list(res)[:2]) < 1024 else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
