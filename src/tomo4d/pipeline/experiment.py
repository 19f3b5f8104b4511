"""The experiment file: one YAML file, validated by one pydantic model (:class:`Experiment`).

Example (paths relative to the experiment file; a glob is ordered naturally, T2 before T10)::

    inputs:
      series: scans/T*.tif            # or a list of files, one per time step
      time_s: [0, 3600, 7200]
      state_of_charge: [0.0, 0.5, 0.85]
      labels: labels/T*.tif           # optional: phase labels per step, or one file (T0)
      voxel_size_nm: 50               # optional: overrides the files' voxel size
      training_pair: {lq: pair/lq.tif, hq: pair/hq.tif}   # optional: LQ/HQ scans of one region (enhance)
      neutron: neutron/T*.tif         # optional: neutron attenuation (1/cm) per step, over the series' field
      projections: proj/*.nxs         # optional: NXtomo projections, one file per scan (reconstruct section)
    enhance: {preset: small, train: {steps: 2000}, steps: 8}   # InDI trained on the pair, inputs.series (LQ)
                                      # enhanced; apply_to_series (default): every analysis stage (segment,
                                      # quantify, dvc, particles, residual, lithiation, neutron) reads the
                                      # enhanced series, twice finer; label files are repeated x2 onto it
    quantify: {}                      # present: the stage runs (defaults of every option)
    dvc:
      node_spacing: 8
      grey_model: znssd
    segment: {labels: labels/T0_scribbles.tif}   # pixel classifier trained on T0, applied to every step
    particles: {particle_class: 2}    # particles per step + tracks (with the DVC fields)
    residual: {sigma_px: 2}           # residual maps (noise floor from inputs.repeat)
    neutron:                          # Li concentration from inputs.neutron (labels: inputs.labels or segment)
      li_free_mu_per_cm: {0: 0.10, 1: 0.30, 2: 0.12, 3: 0.06, 4: 1.0, 5: 0.45}   # label -> Li-free mu, 1/cm
      layer_phases: [1, 2, 3]         # the anode: its mean Li concentration per step
      psf_sigma_nm: 500               # neutron blur; li6_fraction (natural), wavelength_angstrom (1.798)
    truth: {li_concentration_mol_l: [0.33, 4.97, 8.98]}   # optional: true layer Li, mol/L, per step
    reconstruct: {}                   # FBP of inputs.projections (NXtomo files) -> volumes/reconstructed_<stem>.ome.zarr
                                      # {as_series: true}: those volumes are the series (inputs.series left out)

A stage runs when its section is present.  Unknown keys, wrong types and out-of-range
values are refused with the key path, the value and the closest valid key.
:func:`load_experiment` reads and validates a file; :func:`experiment_schema` is its JSON schema.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from .._validate import show
from ..errors import InputError
from .sections import (
    AlignSection,
    DvcSection,
    ParticlesSection,
    QuantifySection,
    ResidualSection,
    SegmentSection,
    StrictModel,
    TruthSection,
)
from .sections_enhance import EnhanceSection, TrainingPairInput
from .sections_lithiation import LithiationSection, lithiation_needs
from .sections_neutron import NeutronSection, check_neutron
from .sections_neutron_spectra import NeutronSpectraSection, check_neutron_spectra
from .sections_reconstruct import ReconstructSection, check_reconstruct

__all__ = ["TODO", "Experiment", "Inputs", "experiment_schema", "load_experiment", "parse_experiment"]

#: placeholder that ``tomo4d init`` writes where it could not infer a value
TODO = "TODO"


class Inputs(StrictModel):
    """The in-situ series and what belongs to it."""

    series: list[str] | str | None = Field(None, description=(
        "Volume files T0..Tn in time order (any format open_volume reads), or one glob pattern ordered naturally (T2 "
        "before T10); null only with reconstruct.as_series (the series reconstructed from inputs.projections)."))
    time_s: list[float] = Field(description="Time of each step since the start, s (one per step, increasing).")
    state_of_charge: list[float] | None = Field(None, description="State of charge of each step, 0..1 "
                                                                  "(null if not known).")
    names: list[str] | None = Field(None, description="Step names (default T0, T1, ...).")
    labels: list[str] | str | None = Field(None, description="Phase label volumes, one per step (a list or a "
                                                             "glob), or one file labelling T0; null: none.")
    voxel_size_nm: float | None = Field(None, gt=0, allow_inf_nan=False,
                                        description="Voxel size, nm; overrides the files' (null: from the files).")
    repeat: str | None = Field(None, description="A repeated scan of T0 with no change in between: the noise "
                                                 "floor of the residual maps (null: none).")
    training_pair: TrainingPairInput | None = Field(None, description="LQ/HQ scans of one region: the training "
                                                                      "data of the enhance stages (null: none).")
    neutron: list[str] | str | None = Field(None, description="Neutron attenuation volumes (1/cm), one per step (a "
                                                              "list or a glob) over the series' field (null: none).")
    neutron_voxel_size_nm: float | None = Field(None, gt=0, allow_inf_nan=False, description=(
        "Voxel size of the neutron volumes, nm; overrides the files' (null: from the files)."))
    neutron_spectra: list[str] | str | None = Field(None, description=(
        "Neutron transmission spectra, one per step (a list or a glob; CSV: wavelength Å, transmission[, sigma]) "
        "of the neutron_spectra section (null: none)."))
    projections: list[str] | str | None = Field(None, description=(
        "NXtomo projection files (image_key, rotation_angle), one per scan (a list or a glob): the input of the "
        "reconstruct section (null: none)."))

    @field_validator("state_of_charge")
    @classmethod
    def _soc_range(cls, v):
        for i, s in enumerate(v or ()):
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"state_of_charge[{i}]={show(s)} is out of range; give a fraction 0..1")
        return v

    @field_validator("time_s")
    @classmethod
    def _increasing(cls, v):
        bad = [i for i in range(1, len(v)) if not v[i] > v[i - 1]]
        if bad:
            raise ValueError(f"time_s[{bad[0]}]={show(v[bad[0]])} is not after time_s[{bad[0] - 1}]="
                             f"{show(v[bad[0] - 1])}; give the times in increasing order")
        return v


class Experiment(StrictModel):
    """An in-situ experiment and the stages to run on it (the whole experiment file)."""

    name: str = Field("experiment", description="Title of the report.")
    inputs: Inputs
    align: AlignSection | None = Field(None, description="Rigid alignment of every step onto T0 on the current "
                                                         "collector; later stages read the aligned series.")
    quantify: QuantifySection | None = Field(None, description="Thickness and phase volumes per step "
                                                               "(of inputs.labels, else of the segment stage).")
    dvc: DvcSection | None = Field(None, description="Local DVC T0 -> Tn, finite strain, regional statistics.")
    segment: SegmentSection | None = Field(None, description="Pixel classifier trained on labelled T0 voxels, "
                                                             "label volumes of every step.")
    particles: ParticlesSection | None = Field(None, description="Particles per step and tracks (needs segment).")
    residual: ResidualSection | None = Field(None, description="Residual maps T0 -> Tn (needs dvc).")
    enhance: EnhanceSection | None = Field(None, description="InDI trained on inputs.training_pair, every step of "
                                                             "inputs.series (LQ) enhanced (first in the workflow).")
    neutron: NeutronSection | None = Field(None, description="Li concentration from inputs.neutron and the phase "
                                                             "labels; joint X-ray/neutron histogram and phases.")
    neutron_spectra: NeutronSpectraSection | None = Field(None, description=(
        "Bragg edges (lattice strain) and the 6Li fraction from inputs.neutron_spectra."))
    lithiation: LithiationSection | None = Field(None, description="Lithiation mode per particle and particle-centred "
                                                                   "frames (needs particles and residual).")
    reconstruct: ReconstructSection | None = Field(None, description=(
        "FBP of every scan of inputs.projections (algotom engine, optional extra tomo4d[reconstruct])."))
    truth: TruthSection | None = Field(None, description="Ground truth shown beside the measurements (phantoms).")
    chunk_budget_mb: float = Field(512.0, gt=0, allow_inf_nan=False, description=(
        "Working memory of one chunk, MiB: the segment, quantify and particles stages stream a volume slab by slab "
        "(resumable, results identical to the in-memory ones) when its working set exceeds this (out of core). "
        "Not in the cache keys: it changes memory, not results."))
    threads: int | None = Field(None, ge=1, description=(
        "CPU threads of every compute stage (torch, numba, BLAS, dask's local scheduler), restored after the run; "
        "default: the CPUs this process may use (affinity mask, cgroup quota). tomo4d --threads N (or a "
        "tomo4d.threads(N) block around run_experiment) overrides it. Not in the cache keys: it changes speed."))
    base_dir: str = Field("", exclude=True, description="Folder that relative paths refer to (set on loading).")

    @model_validator(mode="after")
    def _needs(self):
        if self.quantify is not None and self.inputs.labels is None and self.segment is None:
            raise ValueError("the quantify section needs inputs.labels (phase label volumes) or the segment section; "
                             "add one, or remove the quantify section")
        if self.segment is not None and self.segment.labels is None and self.inputs.labels is None:
            raise ValueError("the segment section needs training labels: set segment.labels (a label volume of T0, "
                             "0 = unlabelled) or inputs.labels")
        if self.enhance is not None and self.inputs.training_pair is None:
            raise ValueError("the enhance section needs inputs.training_pair ({lq: ..., hq: ...}); add it or remove "
                             "the enhance section")
        if self.enhance is not None and self.enhance.apply_to_series and self.align is not None:
            raise ValueError("enhance.apply_to_series and align together are not supported yet (the enhanced series "
                             "is not aligned: the analysis stages would read unaligned enhanced volumes); set "
                             "enhance.apply_to_series: false or remove the align section")
        if self.dvc is not None and self.dvc.mask != "none" and self.quantify is None:
            raise ValueError(f"dvc.mask: {self.dvc.mask} takes the T0 interfaces from the quantify stage; add "
                             "quantify: {} (with inputs.labels or a segment section), or set dvc.mask: none")
        check_neutron(self)
        check_neutron_spectra(self)
        check_reconstruct(self)
        for sec, need in (("particles", "segment"), ("residual", "dvc")):
            if getattr(self, sec) is not None and getattr(self, need) is None:
                raise ValueError(f"the {sec} section needs the {need} section; add {need}: {{}} or remove {sec}")
        lithiation_needs(self)
        return self

    def resolve(self, path) -> Path:
        """``path`` of the file, relative to the experiment file's folder."""
        p = Path(path).expanduser()
        return Path(os.path.normpath(p if p.is_absolute() else Path(self.base_dir or ".") / p))

    def options(self) -> dict:
        """The resolved options (every default filled in), as plain JSON-able data."""
        return json.loads(self.model_dump_json())


def experiment_schema() -> dict:
    """The JSON schema of the experiment file."""
    schema = Experiment.model_json_schema()
    schema["properties"].pop("base_dir", None)
    return schema


def load_experiment(path) -> Experiment:
    """Read and validate an experiment file (YAML); relative paths refer to its folder.

    Raises
    ------
    InputError
        The file does not exist, is not YAML, or does not validate: the message names the file,
        every bad key (as a dotted path), its value, and the fix or the closest valid key.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"experiment file {str(p)!r} does not exist; check the path "
                         "(tomo4d init DIR writes a template)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"experiment file {str(p)!r} is not valid YAML{line}: "
                         f"{getattr(exc, 'problem', None) or exc}; fix the syntax") from None
    return parse_experiment(data, base_dir=p.resolve().parent, source=str(p))


def parse_experiment(data, *, base_dir=".", source: str = "experiment") -> Experiment:
    """Validate experiment data (a mapping, as read from YAML); see :func:`load_experiment`."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: the experiment file must be a mapping of sections (inputs:, dvc:, ...), "
                         f"not {type(data).__name__}; see tomo4d run --schema")
    todo = _find_todo(data)
    if todo:
        raise InputError(f"{source}: {todo} is still {TODO!r} (from tomo4d init); fill in the value")
    try:
        return Experiment.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as exc:
        raise InputError(f"{source}: " + "; ".join(_describe_all(exc.errors()))) from None


def _find_todo(data, prefix="") -> str | None:
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = ((f"[{i}]", v) for i, v in enumerate(data))
    else:
        return prefix if isinstance(data, str) and data.strip().upper().startswith(TODO) else None
    for k, v in items:
        key = f"{prefix}{k}" if str(k).startswith("[") or not prefix else f"{prefix}.{k}"
        found = _find_todo(v, key)
        if found:
            return found
    return None


def _key_path(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("list[str]", "str", "list[float]", "float", "int", "bool", "none") or "[" in str(part) \
                or str(part).startswith("function-"):
            continue  # pydantic's union-member and validator tags
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(loc):
    """The model class holding the key at ``loc`` (for the list of valid keys)."""
    model = Experiment
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return model
        ann = field.annotation
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and hasattr(a, "model_fields")]
        if not inner:
            return model
        model = inner[0]
    return model


def _describe(err: dict) -> str:
    """One pydantic error as ``key.path=value: problem; fix``."""
    loc, kind = tuple(err["loc"]), err["type"]
    key = _key_path(loc)
    if kind == "extra_forbidden":
        valid = [k for k in _model_at(loc).model_fields if k != "base_dir"]
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{key} is not a known key; {hint}valid keys here: {', '.join(valid)}"
    if kind == "missing":
        return f"{key} is missing; add it (see tomo4d run --schema)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return f"{key}: {msg}"
    return f"{key}={show(err.get('input'))}: {msg[0].lower()}{msg[1:]}; fix the value (see tomo4d run --schema)"


def _describe_all(errors) -> list[str]:
    """Every error described once; the alternatives of a union (list or glob) merged into one."""
    out: dict[str, str] = {}
    for err in errors:
        key = _key_path(tuple(err["loc"]))
        text = _describe(err)
        if key in out and err["type"] not in ("extra_forbidden", "missing", "value_error"):
            alt = err["msg"].removeprefix("Input should be ")
            out[key] = out[key].replace("; fix the value", f" or {alt}; fix the value", 1)
        else:
            out.setdefault(key, text)
    return list(out.values())
