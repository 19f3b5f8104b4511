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
import math
import re
import typing
from types import MappingProxyType
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from ..errors import InputError

__all__ = ["AlignSection", "DvcSection", "ParticlesSection", "QuantifySection", "ResidualSection", "SegmentSection", "StrictModel",
           "TruthSection", "dataclass_doc"]


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
    "pyramid": (list[int] | Literal["auto"], Field("auto", description=(
        "method local: node spacings, coarse to fine, correlated before node_spacing when a pair starts without a "
        "previous field (tomo4d.dvc.correlate_pyramid: half-window = spacing, each level handing its field on, "
        "failed nodes replaced from their neighbours). auto: the study's (100, 70, 35) levels coarser than "
        "node_spacing whose windows fit the volume (a level of spacing s needs 2 s + 1 voxels along every axis: "
        "under 71, one level); []: one level."))),
    "psf_sigma_px": (float | None, Field(None, ge=0, allow_inf_nan=False,
                                         description="Gaussian PSF sigma of the scans, px, to compensate blur "
                                                     "at large strain (tomo4d.dvc.PsfCompensation); null: off.")),
    "method": (Literal["local", "global"], Field("local", description=(
        "local: one window per node (tomo4d.dvc.correlate, the options of this section); global: one "
        "regularised field with joint grey-level correction (tomo4d.dvc.correlate_global, the options "
        "under global_options), measured more accurate at 30-50 % expansion with lithiation (RESULTS.md)."))),
    "global_options": (dict, Field(default_factory=dict, description=(
        "Options of tomo4d.dvc.GlobalOptions for method: global (node_spacing, levels, regularisation, "
        "grey_fields, psf_sigma_px, max_iterations, ...) over the section's defaults: node_spacing, the converged "
        "route {solver: auto (Gauss-Newton on the CPU up to 10^5 nodes, else L-BFGS), interpolation: cubic, "
        "regularisation: on deconvolved scans (deconvolve_iterations) 0.2 x T0's noise variance over its grey "
        "variance in the electrode band / 0.15, between 0.05 and 0.2 (session 38), else 0.05, "
        "interface_grey_stiffness: 10, "
        "max_iterations: 1000, hold_without_data: true, restarts: 5 (the held nodes restarted from the measured "
        "in-plane stretch, session 34)} (RESULTS.md, sessions 26-29) and, with axial_start: "
        "true, levels: 1. L-BFGS stopped at its iteration cap (solver: lbfgs) reads blurred scans by its start."))),
    "vtk": (bool, Field(True, description=(
        "Also write ParaView files: fields/dvc_T0_<step>.vtk (displacement, status, residual) and, from the "
        "strain stage, fields/strain_T0_<step>.vtk (+ hencky_zz, volumetric); ASCII, ~60 bytes per node."))),
    "mask": (Literal["none", "electrode", "above_collector"], Field("none", description=(
        "electrode: correlate only the T0 electrode, the z band between the collector and the separator interfaces "
        "of the quantify stage's T0 thickness (windows with less than mask_fraction inside are OUTSIDE_MASK), so "
        "that windows straddling the interfaces do not bias the anode's nodes; above_collector: everything above "
        "the collector interface (the rigid collector left out, the separator's texture kept: measured best with "
        "method: global, RESULTS.md issue 15); both need the quantify section. none: the whole volume."))),
    "node_grid": (Literal["cover", "centred"], Field("cover", description=(
        "method global with a mask: where the control grid's node rows lie along z. cover: at the z phase that lets "
        "the field cover most of the electrode band's collector half under the mask "
        "(tomo4d.dvc.covering_node_plane_px): the strip "
        "next to the collector interface that the field leaves uncovered is as thin as the mask allows, and the same "
        "wherever the scans' field of view was cut; centred: centred in the volume (before session 40). On the HQ "
        "phantom the collector side at T5 read +0.012 with the rows so placed and up to +0.039 with rows placed "
        "otherwise (RESULTS.md sessions 39-40)."))),
    "interfaces": (bool, Field(False, description=(
        "method global with a mask: tie the field's mean u_z over the collector and separator interfaces where the "
        "quantify stage found them in the pair's reference (T0; with incremental T(n-1)) to where it found them in "
        "the deformed step "
        "(tomo4d.dvc.InterfaceMotion; weight global_options.interface_weight). On low-resolution scans the field "
        "rounds the kinks at both interfaces and reads the anode's strain 20-30 % low; the segmented interfaces "
        "hold its total stretch (their own error: the thickness change 5-10 % low on the phantom's LQ series with "
        "slice-wise features, the interfaces within 0.16 px with 3D features and T0 and the most lithiated step "
        "labelled; RESULTS.md sessions 20, 23)."))),
    "flag_textureless": (bool, Field(True, description=(
        "method global: nodes whose window in T0 (as scanned) holds no grey variance above T0's noise are "
        "LOW_TEXTURE (tomo4d.dvc.flag_low_texture), not reported: there the field is the regularisation's "
        "continuation (the LQ phantom's separator, whose fibres the blur wiped out, read up to 1.4 px off). The "
        "noise: from T0 and inputs.repeat; without a repeat scan from T0 alone (tomo4d.quality.noise_sigma, white "
        "noise assumed: correlated noise reads low and fewer nodes are flagged); on the enhanced series only with "
        "a repeat scan."))),
    "axial_start": (bool, Field(False, description=(
        "Start the first step (and every step without a usable previous field) from tomo4d.dvc.axial_profile_start: "
        "a smooth, non-uniform stretch along z fitted to the pair (collector and separator sides swell "
        "differently), instead of the single affine; with method: global global_options' levels defaults to 1, "
        "as coarse levels would undo it (benchmarks/RESULTS.md, 'An axial-profile start')."))),
    "axial_lateral": (bool, Field(False, description=(
        "With axial_start: fit an in-plane scale s(z) too (tomo4d.dvc.axial_profile_start(..., lateral=True)), so "
        "that the start holds the lateral expansion that grows through the electrode."))),
    "incremental": (bool, Field(False, description=(
        "Steps after the first: correlate T(n-1) -> Tn (reference updating: each pair holds one step's stretch and "
        "grey change) with the same start and options and compose it onto the T0 -> T(n-1) field "
        "(tomo4d.dvc.compose_fields, exact composition; a node is measured where both parts are); from_previous is "
        "then unused. The mask is moved into T(n-1) by the previous field. Errors of the steps add up, also when "
        "the electrode shrinks back."))),
    "deconvolve_iterations": (int, Field(0, ge=0, le=200, description=(
        "Richardson-Lucy iterations (tomo4d.dvc.deconvolve) applied to both scans before correlation, with "
        "the PSF deconvolve_psf_sigma_px; 0: off. The blur is the largest single DVC error at battery "
        "expansions; 10-20 measured best on the phantom."))),
    "deconvolve_psf_sigma_px": (float | None, Field(None, gt=0, allow_inf_nan=False, description=(
        "Gaussian PSF sigma of the scans for deconvolve_iterations, px of the analysis grid (e.g. from an edge "
        "measurement: FWHM / 2.355)."))),
    "affine_start": (bool, Field(True, description=(
        "Start the first step (and every step when from_previous is false) from a global affine "
        "registration of the pair (tomo4d.register): the capture range for 40-60 % axial stretch."))),
}


def _dvc_fields() -> dict:
    from ..dvc import CorrelationOptions

    hints = typing.get_type_hints(CorrelationOptions)
    docs = dataclass_doc(CorrelationOptions)
    fields = {}
    for f in dataclasses.fields(CorrelationOptions):
        tp = str | None if f.name == "device" else hints[f.name]
        default = f.default
        if f.name == "grey_model":          # the experiment file names the model (GreyModel.named)
            tp, default = str, f.default.name
        fields[f.name] = (tp, Field(default, description=docs.get(f.name, "")))
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
    if self.deconvolve_iterations and self.deconvolve_psf_sigma_px is None:
        raise ValueError(f"dvc.deconvolve_iterations={self.deconvolve_iterations} needs the scans' PSF: set "
                         "dvc.deconvolve_psf_sigma_px (px), or deconvolve_iterations: 0")
    if self.interfaces and (self.method != "global" or self.mask == "none"):
        raise ValueError("dvc.interfaces: true needs method: global and a mask (electrode or above_collector), whose "
                         "interfaces the quantify stage measures; set them, or remove interfaces")
    if self.axial_lateral and not self.axial_start:
        raise ValueError("dvc.axial_lateral: true refines the axial start's fit; set dvc.axial_start: true too, or "
                         "remove axial_lateral")
    if self.pyramid != "auto":
        levels = list(self.pyramid)
        if any(b >= a for a, b in zip(levels, levels[1:])) or any(v <= self.node_spacing for v in levels):
            raise ValueError(f"dvc.pyramid={levels} must be node spacings coarser than node_spacing="
                             f"{self.node_spacing}, decreasing (e.g. [100, 70, 35]); or auto, or [] for one level")
    try:
        self.correlation_options()
    except InputError as exc:
        raise ValueError(str(exc)) from None
    if self.method == "global":
        try:
            self.global_dvc_options()
        except InputError as exc:  # named as the key the user wrote
            msg = str(exc)
            raise ValueError(msg if "global_options" in msg else f"dvc.global_options: {msg}") from None
    return self


_OPTION_NAMES = frozenset(f for f in _dvc_fields())

#: ``global_options`` defaults of ``method: global``: solved to convergence (Gauss-Newton on the CPU up to
#: ``tomo4d.dvc.global_dvc.AUTO_GN_MAX_NODES`` nodes, else L-BFGS) with the Laplacian's weight of
#: :func:`route_regularisation` (0.05-0.2 on deconvolved scans), the grey fields held near-flat across tied interfaces.
#: Measured against L-BFGS at 0.05 stopped at its iteration cap (the library's default): the LQ phantom (tied) and the
#: HQ phantom (untied), default, half and zero contrast loss and expansion 0.6, sides and det F - 1 within 0.02 but for
#: one step per LQ series (0.021-0.025, against 0.017-0.022 capped); the demo's collector side within 0.009 (capped:
#: -0.034); HQ's median lowest between 0.05 and 0.2 (session 27); snow, as scanned (0.05), 0.0093 px at 5.3-6.0x
#: SPAM's nodes per CPU second (SPAM 0.0287 px); a capped field follows its start and rounding (benchmarks/RESULTS.md,
#: sessions 26-29).  ``max_iterations`` 1000: L-BFGS (a GPU, or above the node limit) needs 170-240 iterations per
#: pair on the HQ phantom and 270-510 on the LQ (tied) to reach Gauss-Newton's field; stopped at 100 it read the LQ
#: collector side up to 0.032 high (session 28).  Gauss-Newton stops by itself in 3-25.
#: ``hold_without_data``: L-BFGS over Gauss-Newton's unknowns (free, it read det F - 1 0.02-0.10 low).
CONVERGED_ROUTE = MappingProxyType({"solver": "auto", "interpolation": "cubic", "interface_grey_stiffness": 10.0,
                                    "max_iterations": 1000, "hold_without_data": True, "restarts": 5})
#: The converged route's Laplacian weight (``regularisation``), by what the scans went through: 0.2 on scans
#: deconvolved first (``deconvolve_iterations``), whose Richardson-Lucy noise the converged field follows at 0.05 (the
#: LQ phantom's collector side up to 0.067 low, session 26); 0.05 on scans as reconstructed, which it reads sharper
#: (snow 0.0093 px against 0.0165 at 0.2 and 0.0104 at 0.03; session 29).  The phantom as scanned reads far off at
#: either weight (T1: LQ 0.66 px at 0.05 against 0.99 at 0.2, HQ 0.62 against 0.57): it needs the deconvolution.
ROUTE_REGULARISATION = MappingProxyType({"deconvolved": 0.2, "as_scanned": 0.05})
#: The noise variance over the grey-level variance (:func:`tomo4d.quality.noise_variance_ratio`, the part correlated)
#: from which deconvolved scans take the full :data:`ROUTE_REGULARISATION` ``deconvolved`` weight; below it the weight
#: falls in proportion, to no less than the ``as_scanned`` one.  The LQ phantom reads 0.175 (the demo 0.187): 0.2, as
#: measured best there (0.1 read its separator side as high or higher and its median 0.06 px higher); the HQ phantom
#: 0.0175: 0.05, which reads its det F - 1 within 0.025 over seeds 0-2 where 0.2 read it 0.036 low (session 38).
NOISE_RATIO_FULL_WEIGHT = 0.15


def route_regularisation(*, deconvolved: bool, noise_ratio: float | None = None) -> float:
    """The converged route's Laplacian weight: :data:`ROUTE_REGULARISATION` ``as_scanned`` on scans as reconstructed;
    on deconvolved scans ``deconvolved`` times ``noise_ratio / NOISE_RATIO_FULL_WEIGHT``, within the two weights (the
    range measured; a MAP weight follows the data's noise variance).  Without ``noise_ratio`` (unknown: the enhanced
    series without a repeat scan) the full ``deconvolved`` weight."""
    lo, hi = ROUTE_REGULARISATION["as_scanned"], ROUTE_REGULARISATION["deconvolved"]
    if not deconvolved:
        return lo
    if noise_ratio is None:
        return hi
    return min(hi, max(lo, hi * float(noise_ratio) / NOISE_RATIO_FULL_WEIGHT))


def converged_route(node_spacing: int, *, deconvolved: bool, axial_start: bool,
                    noise_ratio: float | None = None) -> dict:
    """The ``GlobalOptions`` fields of the converged route (the runner's ``method: global`` and ``tomo4d dvc --method
    global``): :data:`CONVERGED_ROUTE`, the Laplacian's weight by whether the scans are deconvolved and their noise
    (:func:`route_regularisation`), and one level after an axial start (coarse levels would undo it; RESULTS.md, 'An
    axial-profile start')."""
    route = {"node_spacing": node_spacing, **CONVERGED_ROUTE,
             "regularisation": route_regularisation(deconvolved=deconvolved, noise_ratio=noise_ratio)}
    if axial_start:
        route["levels"] = 1
    return route


class _DvcBase(StrictModel):
    def correlation_options(self):
        """The :class:`tomo4d.dvc.CorrelationOptions` of this section."""
        from ..dvc import CorrelationOptions

        return CorrelationOptions(**{k: getattr(self, k) for k in _OPTION_NAMES})

    def global_dvc_options(self, noise_ratio: float | None = None):
        """The :class:`tomo4d.dvc.GlobalOptions` of ``global_options`` over the section's defaults: its node spacing,
        the converged route (:data:`CONVERGED_ROUTE`, the Laplacian's weight by whether the scans are deconvolved and
        their ``noise_ratio``, :func:`route_regularisation`), with ``axial_start`` one level."""
        from ..dvc import GlobalOptions
        from ..dvc.global_dvc import resolve_global_options

        base = converged_route(self.node_spacing, deconvolved=bool(self.deconvolve_iterations),
                               axial_start=self.axial_start, noise_ratio=noise_ratio)
        return resolve_global_options(GlobalOptions(**base), self.global_options, name="dvc.global_options")

    def pyramid_levels(self, shape) -> list[int]:
        """The coarse node spacings (before ``node_spacing``) of a local pair of volumes of ``shape`` that starts
        without a previous field: ``pyramid``, or with ``auto`` :func:`tomo4d.dvc.study_levels` (the study's levels
        coarser than ``node_spacing`` whose windows fit the volume)."""
        if self.pyramid != "auto":
            return list(self.pyramid)
        from ..dvc import study_levels

        return study_levels(shape, self.node_spacing)

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


class SegmentSection(StrictModel):
    """Pixel classifier (tomo4d.segment) trained on labelled voxels of T0 (and of other steps), applied to every step."""

    labels: str | list[str] | None = Field(None, description=(
        "Label volume of the T0 scan (0 = unlabelled, 1, 2, ... classes), or a list of label volumes of the steps "
        "in label_steps (e.g. T0 and the most lithiated step, where phases absent at T0 such as lithiated silicon "
        "appear at their darkest: a classifier that has not seen that state reads the separator interface short); "
        "null: the first file of inputs.labels."))
    label_steps: list[int] | None = Field(None, description=(
        "The step (index into inputs.series) each file of `labels` labels; null: 0 for one file, 0, 1, ... for "
        "a list."))
    slices: list[int] | None = Field(None, description="Indices of fully labelled slices of `labels` along "
                                                       "slice_axis; only those are used and every value, 0 "
                                                       "included, is a class. null: 0 = unlabelled.")
    slice_axis: int = Field(0, ge=0, le=2, description="Axis of `slices`: 0 z (xy planes), 1 y (xz), 2 x (yz).")
    n_trees: int = Field(24, ge=1, le=1000, description="Trees of the random forest.")
    sigmas: list[float] = Field([0.7, 1.6, 3.5, 5.0], min_length=1,
                                description="Gaussian feature scales, voxels (tomo4d.segment.FeatureSpec).")
    feature_ndim: Literal[2, 3] = Field(3, description="2: slice-wise (xy) features; 3: 3D features.")
    max_samples_per_class: int = Field(20_000, ge=1, description="Labelled voxels used per class (seeded draw).")
    seed: int = Field(0, ge=0, description="Seed of the sample draw and of the forest.")

    @field_validator("sigmas")
    @classmethod
    def _positive(cls, v):
        bad = [i for i, s in enumerate(v) if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"sigmas[{bad[0]}]={v[bad[0]]!r} must be a positive number of voxels")
        return v


class ParticlesSection(StrictModel):
    """Particles of the segmentation per step, their geometry, and tracks (with the DVC fields when run)."""

    particle_class: int | list[int] = Field(2, description=(
        "Label value of the particle phase in the segmentation (2: silicon in tomo4d's phase codes), or the list "
        "of values that together make a particle ([2, 3]: silicon and lithiated silicon, so that a particle "
        "stays one particle while it lithiates)."))

    @field_validator("particle_class")
    @classmethod
    def _classes(cls, v):
        values = [v] if isinstance(v, int) else v
        if not values or any(c < 0 for c in values) or len(set(values)) != len(values):
            raise ValueError(f"particle_class={v!r} must be a label value >= 0 or a list of distinct ones")
        return v

    def particle_classes(self) -> list[int]:
        """The label values that make a particle."""
        return [self.particle_class] if isinstance(self.particle_class, int) else list(self.particle_class)

    min_voxels: int = Field(8, ge=1, description="Particles smaller than this many inputs.series voxels are removed "
                                                 "(the same volume on the enhanced series: 8x as many of its voxels).")
    split: bool = Field(True, description="Separate touching particles (distance watershed).")
    track: bool = Field(True, description="Track the particles through the steps (tables/tracks).")
    use_dvc: bool = Field(True, description="Predict each particle's motion with the DVC field when the dvc "
                                            "stage runs (tomo4d.quantify.track_particles displacement=).")
    search_radius_factor: float = Field(1.5, gt=0, allow_inf_nan=False,
                                        description="Candidate search radius, equivalent radii.")


class ResidualSection(StrictModel):
    """Residual maps T0 -> Tn (tomo4d.dvc.residual_map): grey-level change the DVC field does not explain."""

    sigma_px: float = Field(2.0, ge=0, allow_inf_nan=False, description="Gaussian blur of the difference, px.")
    statistic: Literal["mean", "p95"] = Field("mean", description="Noise floor statistic of the repeat scan "
                                                                  "(inputs.repeat; without it the floor is 0).")
    order: int = Field(3, ge=0, le=5, description="Interpolation order of the deformed scan.")
    save_volumes: bool = Field(True, description="Write volumes/residual_T0_<step>.ome.zarr (else the summary only).")


class TruthSection(StrictModel):
    """Ground truth (e.g. of a tomo4d phantom), shown beside the measurements in the report."""

    labels: list[str] | str | None = Field(None, description="True phase labels, one per step (list or glob).")
    particles: list[str] | str | None = Field(None, description="True particle labels, one per step (list or glob).")
    displacement: list[str] | str | None = Field(None, description=(
        "True displacement T0 -> Tn, one .npz per step (list or glob): arrays positions_nm (nz, ny, nx, 3) "
        "and displacement_nm (nz, ny, nx, 3) on a regular grid whose first point is the centre of voxel "
        "(0, 0, 0) of inputs.series (the phantom's truth/displacement_T*.npz). The strain stage samples it "
        "at the DVC nodes and reports the displacement error and the true strain in the same measures "
        "(tomo4d.pipeline.truth_fields)."))
    li_concentration_mol_l: list[float] | None = Field(None, description=(
        "True mean Li concentration of the neutron layer (neutron.layer_phases), mol/L, one per step."))
    li6_fraction: float | list[float] | None = Field(None, description=(
        "True 6Li atom fraction of the lithium the spectra cross (neutron_spectra.li6): one number, or one per step."))
    lattice_strain: dict[str, float | list[float]] | None = Field(None, description=(
        "True lattice strain per Bragg reflection (neutron_spectra.bragg name -> one number, or one per step)."))


class AlignSection(StrictModel):
    """Rigid alignment of every step onto T0 on the current collector (tomo4d.register, rigid=True)."""

    collector_z: list[int] | None = Field(None, min_length=2, max_length=2, description=(
        "z range [start, stop) of the current collector in T0, px; null: detected as the brightest slab of "
        "T0's mean grey level per z slice (tomo4d.pipeline.stages_align.detect_collector)."))
    margin_px: int = Field(4, ge=0, description=(
        "The reference region is the collector widened by this many slices on each side, so that its faces and "
        "the electrode texture next to it fix all six rigid parameters (a featureless foil fixes only three)."))
    binning: list[int] = Field([4, 2, 1], min_length=1, description="Registration binning factors, coarse to fine.")
    max_iterations: int = Field(50, ge=1, description="Gauss-Newton iterations per binning level.")
    order: int = Field(3, ge=0, le=5, description="Interpolation order of the aligned volumes (3: cubic).")

    @field_validator("collector_z")
    @classmethod
    def _range(cls, v):
        if v is not None and not 0 <= v[0] < v[1]:
            raise ValueError(f"collector_z={v!r} must be [start, stop) with 0 <= start < stop, px")
        return v

    @field_validator("binning")
    @classmethod
    def _factors(cls, v):
        if any(b < 1 for b in v):
            raise ValueError(f"binning={v!r}: factors must be positive integers, coarse to fine")
        return v
