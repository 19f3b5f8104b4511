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
elif mode in ("script", "script-wec"):  # the plain streamed peer: tifffile pages -> zarr chunks, one 64-slice buffer
    import numpy as np, tifffile, zarr
    from pathlib import Path
    files = sorted(Path(src).glob("*.tif"))
    first = tifffile.imread(files[0])
    from zarr.codecs import BloscCodec  # the codec tomo4d writes by default, so that both do the same work
    # "script-wec": the script told to skip zarr's empty-chunk check (write_empty_chunks=True; it then writes
    # all-zero chunks too, so its store differs from tomo4d's where a chunk is empty; none is in this volume)
    arr = zarr.create_array(dst, shape=(len(files),) + first.shape, dtype=first.dtype, chunks=(64, 256, 256),
                            compressors=[BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")],
                            config={"write_empty_chunks": mode == "script-wec"})
    buf = np.empty((64,) + first.shape, first.dtype)
    for z0 in range(0, len(files), 64):
        n = min(64, len(files) - z0)
        for j in range(n):
            tifffile.imread(files[z0 + j], out=buf[j])
        arr[z0:z0 + n] = buf[:n]
else:  # naive baseline: whole volume in memory
    import numpy as np, tifffile, zarr
    from pathlib import Path
    files = sorted(Path(src).glob("*.tif"))
    vol = tifffile.imread(files)
    arr = zarr.create_array(dst, shape=vol.shape, dtype=vol.dtype, chunks=(64, 256, 256))
    arr[:] = vol
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mib": ru.ru_maxrss / 1024}))
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
    ap.add_argument("--repeats", type=int, default=3, help="A/B rounds of tomo4d vs the plain streamed script")
    ap.add_argument("--ab-only", action="store_true", help="only the A/B rounds against the plain script")
    args = ap.parse_args()
    work = Path(args.workdir) / f"convert_{args.size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    n = args.size
    gib = n**3 * 2 / 2**30
    t0 = time.perf_counter()
    # in a child: ru_maxrss survives fork+exec, so this process must stay small for the children's figures
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                    "import bench_convert; bench_convert.make_slices(Path(sys.argv[2]), int(sys.argv[3]))",
                    str(Path(__file__).parent), str(work / "slices"), str(n)], check=True)
    print(f"made {n}^3 uint16 slice folder ({gib:.2f} GiB) in {time.perf_counter() - t0:.1f} s")
    steps = [
        ("slices -> ome.zarr (tomo4d, streamed)", "stream", work / "slices", work / "v.ome.zarr"),
        ("ome.zarr -> slices (tomo4d, streamed)", "stream", work / "v.ome.zarr", work / "back"),
        ("slices -> zarr (naive, in memory)", "naive", work / "slices", work / "naive.zarr"),
    ]
    res = {}
    for name, mode, src, dst in ([] if args.ab_only else steps):
        r = run_child(mode, src, dst)
        res[name] = r
        print(f"{name:<40} wall {r['wall_s']:7.1f} s   peak RSS {r['peak_rss_mib']:8.0f} MiB")
    import numpy as np
    import tifffile

    if not args.ab_only:
        a = tifffile.imread(sorted((work / "slices").glob("*.tif"))[n // 2])
        b = tifffile.imread(sorted((work / "back").glob("*.tif"))[n // 2])
        print(f"round trip identical (middle slice): {bool(np.array_equal(a, b))}")
        s, naive = res[steps[0][0]], res[steps[2][0]]
        print(f"streamed/naive peak RSS ratio: {s['peak_rss_mib'] / naive['peak_rss_mib']:.3f}; "
              f"wall ratio {s['wall_s'] / naive['wall_s']:.2f}")
        print(f"target peak RSS < 1024 MiB: "
              f"{'met' if max(res[k]['peak_rss_mib'] for k in list(res)[:2]) < 1024 else 'NOT met'}")
    import statistics

    modes = {"tomo4d convert": ("stream", ".ome.zarr"), "plain streamed script": ("script", ".zarr"),
             "script, write_empty_chunks=True": ("script-wec", ".w.zarr")}
    ab = {k: [] for k in modes}
    for i in range(args.repeats):  # A/B/C alternating, each in a fresh process, fresh output
        for k, (mode, suffix) in modes.items():
            ab[k].append(run_child(mode, work / "slices", work / f"ab{i}{suffix}"))
            print(f"  round {i + 1} {k:<34} wall {ab[k][-1]['wall_s']:6.2f} s  CPU {ab[k][-1]['cpu_s']:6.2f} s",
                  flush=True)
    same = all(np.array_equal(np.asarray(__import__("zarr").open_array(str(work / f"ab0{sfx}"), path=path)[:]),
                              np.asarray(__import__("zarr").open_array(str(work / "ab0.zarr"))[:]))
               for sfx, path in ((".ome.zarr", "0"), (".w.zarr", None)))
    print(f"voxels identical between the three outputs: {same}")
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in ab.items()}
    t = med["tomo4d convert"]
    for k, r in med.items():
        print(f"{k:<40} wall {r['wall_s']:7.2f} s   CPU {r['cpu_s']:7.2f} s   peak RSS {r['peak_rss_mib']:8.0f} MiB "
              f"(median of {args.repeats})")
    for k in list(med)[1:]:
        p = med[k]
        print(f"slices -> zarr, tomo4d vs {k}: speed ({k} / tomo4d) wall {p['wall_s'] / t['wall_s']:.2f}, "
              f"CPU {p['cpu_s'] / t['cpu_s']:.2f}; peak RSS tomo4d/{k} {t['peak_rss_mib'] / p['peak_rss_mib']:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
