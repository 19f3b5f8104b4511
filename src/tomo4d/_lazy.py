"""Lazy public attributes for sub-packages (PEP 562): import a submodule on first use.

Every ``tomo4d`` sub-package ``__init__`` uses :func:`lazy_exports`, so that importing a package
imports none of its submodules (nor torch, numba, scikit-learn or matplotlib behind them) until
one of its names is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """Module-level ``__getattr__`` and ``__dir__`` resolving ``exports`` (name -> submodule) lazily.

    Use in a package ``__init__``::

        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

    A name equal to the name of its own submodule (``tomo4d.dvc.correlate``, the function in
    the module ``correlate``) is bound at once: importing that submodule later would otherwise
    make the package attribute the module instead of the function.
    """
    for name, module in exports.items():
        if name == module:
            namespace[name] = getattr(importlib.import_module(f"{package}.{module}"), name)

    def __getattr__(name):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
