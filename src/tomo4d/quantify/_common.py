"""Input handling shared by the quantification modules: label volumes, voxel sizes, phase codes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validate import check_int, check_labels, check_number, show, voxel_size
from ..errors import InputError

__all__ = ["PhaseCodes", "as_labels", "voxel_size", "check_int", "check_fraction"]


@dataclass(frozen=True)
class PhaseCodes:
    """Which label values of a phase segmentation mean what.

    The defaults are the values of :class:`tomo4d.phantom.Phase` (the convention of tomo4d
    segmentations); pass another instance for segmentations with other codes.

    Attributes
    ----------
    pore, matrix, silicon, lithiated, collector, separator : tuple of int
        Label values of each phase (several values allowed, empty tuple for "absent").
    """

    pore: tuple[int, ...] = (0,)
    matrix: tuple[int, ...] = (1,)
    silicon: tuple[int, ...] = (2,)
    lithiated: tuple[int, ...] = (3,)
    collector: tuple[int, ...] = (4,)
    separator: tuple[int, ...] = (5,)

    def __post_init__(self):
        for name in ("pore", "matrix", "silicon", "lithiated", "collector", "separator"):
            v = getattr(self, name)
            try:
                vals = (int(v),) if np.isscalar(v) else tuple(int(a) for a in v)
            except (TypeError, ValueError):
                raise InputError(f"PhaseCodes.{name}={show(v)} must be an integer label value or a tuple of them") from None
            object.__setattr__(self, name, vals)

    @property
    def anode(self) -> tuple[int, ...]:
        """Solid phases of the anode (matrix, silicon, lithiated silicon)."""
        return self.matrix + self.silicon + self.lithiated

    def expected(self) -> dict[int, str]:
        """``{label value: phase name}`` of every code (what a phase segmentation may hold)."""
        out: dict[int, str] = {}
        for n, codes in self.names().items():
            for c in codes:
                out[c] = n if c not in out else f"{out[c]}/{n}"
        return out

    def names(self) -> dict[str, tuple[int, ...]]:
        """``{phase name: label values}`` in a fixed order."""
        return {"pore": self.pore, "matrix": self.matrix, "silicon": self.silicon, "lithiated_silicon": self.lithiated,
                "collector": self.collector, "separator": self.separator}


def as_labels(obj, *, name: str, ndim: int = 3, phases: PhaseCodes | None = None, instances: bool = False,
              role: str | None = None) -> np.ndarray:
    """A numpy integer label array from an array or a :class:`~tomo4d.volume.Volume`.

    ``phases``: phase labels, every value must be one of these codes; ``instances``: particle
    labels (a binary mask of several objects is refused).  See :func:`tomo4d._validate.check_labels`.
    """
    if phases is not None:
        return check_labels(name, obj, ndim=ndim, expected=phases.expected(),
                            role=role or "phase labels are expected",
                            fix="relabel them to these codes (--map 255:2 on the command line, "
                                "labels[labels == 255] = 2 in numpy), or pass phases=PhaseCodes(...) naming "
                                "the codes of your segmentation")
    return check_labels(name, obj, ndim=ndim, instances=instances,
                        role=role or ("particle labels are expected" if instances else "labels are expected"))


def check_fraction(name: str, value, *, open_low: bool = False) -> float:
    """``value`` as a float in [0, 1] (``open_low``: in (0, 1])."""
    return check_number(name, value, minimum=0.0, maximum=1.0, exclusive_minimum=open_low)


def step_names(n: int, names=None) -> tuple[str, ...]:
    if names is None:
        return tuple(f"T{i}" for i in range(n))
    names = tuple(str(s) for s in names)
    if len(names) != n:
        raise InputError(f"step_names has {len(names)} names for {n} steps; give one name per step")
    return names
