"""Peak memory and time of the streaming command-line tools on large label volumes (issue 18): each command once
with the default ``--chunk-budget-mb`` (slab by slab) and, with ``--whole``, once with a budget so large that the
volume is read into memory (the in-memory route the command took before it streamed), in fresh processes.

    python benchmarks/bench_cli_memory.py WORK_OUT [--whole] [--only NAME ...]

``WORK_OUT`` is a finished ``bench_run_scale.py`` run folder (``volumes/segment_T*.ome.zarr``,
``volumes/particles_T*.ome.zarr``).  Prints one JSON line per command: wall s, user + system CPU s and the peak
RSS (``/usr/bin/time``'s maximum resident set size, MiB) of the process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

TOMO4D = [sys.executable, "-c", "import sys; from tomo4d.cli import main; sys.exit(main())"]


def _commands(out: Path, tmp: Path) -> dict[str, list[str]]:
    v = out / "volumes"
    seg = sorted(str(p) for p in v.glob("segment_T*.ome.zarr"))
    par = sorted(str(p) for p in v.glob("particles_T*.ome.zarr"))
    return {
        "quantify thickness": ["quantify", "thickness", *seg],
        "quantify phases": ["quantify", "phases", seg[0]],
        "quantify particles": ["quantify", "particles", par[0]],
        "quantify track": ["quantify", "track", *par[:2]],
        "segment evaluate": ["segment", "evaluate", seg[1], seg[0]],
        "segment particles": ["segment", "particles", seg[0], str(tmp / "particles.ome.zarr"), "--class", "2",
                              "--no-split", "--overwrite"],
    }


def _run(name: str, args: list[str], budget: str) -> dict:
    cmd = ["/usr/bin/time", "-f", "%e %U %S %M", *TOMO4D, *args, "--chunk-budget-mb", budget]
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall, user, sys_s, rss_kb = p.stderr.strip().splitlines()[-1].split()
    return {"bench": "cli_memory", "command": name, "chunk_budget_mb": float(budget), "rc": p.returncode,
            "wall_s": float(wall), "cpu_s": float(user) + float(sys_s), "peak_rss_mib": int(rss_kb) / 1024.0,
            **({"error": p.stderr.strip().splitlines()[-2][:300]} if p.returncode else {})}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--whole", action="store_true", help="also run each command in memory (a huge budget)")
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.out) as tmp:
        for name, args in _commands(a.out, Path(tmp)).items():
            if a.only and name not in a.only:
                continue
            for budget in ("512", "1000000") if a.whole else ("512",):
                print(json.dumps(_run(name, args, budget)), flush=True)


if __name__ == "__main__":
    main()
