"""tomo4d: time-resolved (4D) tomography of battery cells, from volumes to trustworthy numbers.

Importing tomo4d is cheap and changes no global state; heavy dependencies
(torch, dask schedulers, matplotlib) are imported by the stages that need them, and numpy with the first
use of :class:`Volume`, :func:`threads` or :func:`available_cpus` (PEP 562), so that ``tomo4d --help`` and
``--version`` import none of them.
"""

from ._version import __version__
from .errors import FormatError, InputError, OutputError, OverwriteError, Tomo4dError

#: public name -> (module, attribute), imported on first use
_LAZY = {"Volume": ("volume", "Volume"), "VolumeMetadata": ("volume", "VolumeMetadata"),
         "threads": ("_threads", "compute_threads"), "available_cpus": ("_threads", "available_cpus")}

__all__ = ["__version__", "Volume", "VolumeMetadata", "Tomo4dError", "InputError", "FormatError",
           "OverwriteError", "OutputError", "threads", "available_cpus"]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tomo4d' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
