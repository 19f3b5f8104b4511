"""The stage sections of an experiment file: one pydantic model per stage, options embedded.

Each section's options come from the library's own options object wherever one exists:
:class:`DvcSection` is generated from the fields, types, defaults and documentation of
:class:`tomo4d.dvc.CorrelationOptions` (a new option there is a new key here), and every value is
checked by that class itself (its ``__post_init__``), so the experiment file refuses exactly
what :func:`tomo4d.dvc.correlate` refuses, with the same message.  Only what the library has no
options object for (node spacing, half-window, search radius, the PSF shortcut) is declared here.
"""

from __future__ import annotations

import dataclasses
import re
import typing

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from ..errors import InputError

__all__ = ["DvcSection", "QuantifySection", "StrictModel", "dataclass_doc"]


class StrictModel(BaseModel):
    """Base of every experiment-file model: frozen, unknown keys refused, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def dataclass_doc(cls) -> dict[str, str]:
    """``{attribute: first sentence of its description}`` from a numpydoc ``Attributes`` section."""
    doc = cls.__doc__ or ""
    m = re.search(r"Attributes\n\s*-+\n(.*)", doc, re.DOTALL)
    out: dict[str, str] = {}
    if not m:
        return out
    name, lines = None, []
    for line in m.group(1).splitlines():
        head = re.match(r"^    (\w[\w, ]*) :", line)
        if head:
            if name:
                for n in name.split(","):
                    out[n.strip()] = " ".join(lines)
            name, lines = head.group(1), []
        elif name and line.strip():
            lines.append(line.strip())
    if name:
        for n in name.split(","):
            out[n.strip()] = " ".join(lines)
    return {k: re.split(r"(?<=\.)\s", v, maxsplit=1)[0] for k, v in out.items()}


class QuantifySection(StrictModel):
    """Thickness and phase volumes of the label series (needs ``inputs.labels``)."""

    thickness: bool = Field(True, description="Electrode thickness per step (tables/thickness).")
    phases: bool = Field(True, description="Phase volumes and relative non-lithiated Si per step (tables/phases).")
    smooth_nm: float = Field(400.0, ge=0, allow_inf_nan=False,
                             description="Lateral smoothing of the interface maps, nm.")
    n_layers: int = Field(2, ge=1, le=20, description="Depth layers of the regional strain statistics "
                                                      "(2: collector and separator halves of the T0 anode).")


#: correlate() keyword arguments that are not CorrelationOptions fields
_DVC_OWN = {
    "node_spacing": (int, Field(10, ge=2, description="Distance between DVC nodes, px.")),
    "half_window": (int | None, Field(None, ge=1, description="Half size of each correlation window, px "
                                                              "(default: node_spacing, 50 % overlap).")),
    "search_radius_px": (int, Field(3, ge=0, description="Integer search radius before Gauss-Newton, px "
                                                         "(first step; later steps start from the previous field).")),
    "from_previous": (bool, Field(True, description="Start each step T0 -> Tn from the field T0 -> Tn-1.")),
    "psf_sigma_px": (float | None, Field(None, ge=0, allow_inf_nan=False,
                                         description="Gaussian PSF sigma of the scans, px, to compensate blur "
                                                     "at large strain (tomo4d.dvc.PsfCompensation); null: off.")),
}


def _dvc_fields() -> dict:
    from ..dvc import CorrelationOptions

    hints = typing.get_type_hints(CorrelationOptions)
    docs = dataclass_doc(CorrelationOptions)
    fields = {}
    for f in dataclasses.fields(CorrelationOptions):
        tp = str | None if f.name == "device" else hints[f.name]
        fields[f.name] = (tp, Field(f.default, description=docs.get(f.name, "")))
    return fields


def _check_option(cls, value, info):
    """Each CorrelationOptions field checked by CorrelationOptions itself (its message, this key)."""
    from ..dvc import CorrelationOptions

    if info.field_name in _OPTION_NAMES and info.field_name != "device" and value is not None:
        try:
            CorrelationOptions(**{info.field_name: value})
        except InputError as exc:
            raise ValueError(str(exc)) from None
    return value


def _check_all(self):
    try:
        self.correlation_options()
    except InputError as exc:
        raise ValueError(str(exc)) from None
    return self


_OPTION_NAMES = frozenset(f for f in _dvc_fields())


class _DvcBase(StrictModel):
    def correlation_options(self):
        """The :class:`tomo4d.dvc.CorrelationOptions` of this section."""
        from ..dvc import CorrelationOptions

        return CorrelationOptions(**{k: getattr(self, k) for k in _OPTION_NAMES})

    def correlate_kwargs(self) -> dict:
        """Keyword arguments of :func:`tomo4d.dvc.correlate` (without the volumes and ``initial``)."""
        kw = {"node_spacing": self.node_spacing, "half_window": self.half_window,
              "options": self.correlation_options()}
        if self.psf_sigma_px:
            kw["psf_sigma_px"] = self.psf_sigma_px
        return kw


DvcSection = create_model(
    "DvcSection", __base__=_DvcBase, __doc__=(
        "Local DVC T0 -> Tn of every step, finite strain, and regional statistics when labels are given. "
        "Every option of tomo4d.dvc.CorrelationOptions is a key of this section."),
    __validators__={"_each": field_validator("*")(_check_option), "_all": model_validator(mode="after")(_check_all)},
    **_DVC_OWN, **_dvc_fields())
