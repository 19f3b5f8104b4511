"""tomo4d: time-resolved (4D) tomography of battery cells, from volumes to trustworthy numbers.

Importing tomo4d is cheap and changes no global state; heavy dependencies
(torch, dask schedulers, matplotlib) are imported by the stages that need them.
"""

from ._threads import available_cpus
from ._threads import compute_threads as threads
from ._version import __version__
from .errors import FormatError, InputError, OutputError, OverwriteError, Tomo4dError
from .volume import Volume, VolumeMetadata

__all__ = ["__version__", "Volume", "VolumeMetadata", "Tomo4dError", "InputError", "FormatError",
           "OverwriteError", "OutputError", "threads", "available_cpus"]
