"""``python -m tomo4d._warmup`` (run by ``make install``) compiles every cached numba kernel of tomo4d."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tomo4d"


def _modules_with_cached_kernels() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        if "cache=True" in path.read_text(encoding="utf-8"):
            out.append(".".join(("tomo4d", *path.relative_to(SRC).with_suffix("").parts)))
    return out


def _cached(dispatcher) -> bool:
    """A compiled version of ``dispatcher`` is in numba's on-disk cache (a kernel called only from another
    kernel is not loaded when its caller comes from the cache, so it shows no signature then)."""
    cache = getattr(dispatcher, "_cache", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    return index is not None and Path(index).is_file()


@pytest.mark.slow
def test_warm_up_compiles_every_cached_kernel():
    from numba.core.registry import CPUDispatcher

    from tomo4d._warmup import warm_up

    seconds = warm_up()
    assert set(seconds) == {"register", "dvc", "dvc_global", "segment", "phantom"}
    modules = _modules_with_cached_kernels()
    assert modules, "no cached kernels found: the scan is broken"
    missing = []
    for name in modules:
        assert name in sys.modules, f"{name} holds cached kernels but no warm-up stage imports it"
        mod = importlib.import_module(name)
        for attr, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == name and obj.targetoptions.get("inline") != "always" \
                    and not (obj.signatures or _cached(obj)):
                missing.append(f"{name}.{attr}")
    assert not missing, f"kernels not compiled by the warm-up: {missing}"
