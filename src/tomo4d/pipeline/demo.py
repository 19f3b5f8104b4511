"""The built-in demo: an ordinary experiment, run by the runner.

``tomo4d demo OUT`` (:func:`run_demo`):

1. the phantom (:func:`tomo4d.phantom.make_experiment`) writes its scans and truth under ``OUT/data``
   (:meth:`~tomo4d.phantom.SyntheticExperiment.save`); two in-situ steps are converted to HDF5 and
   OME-Zarr, so the series mixes formats as a real one may;
2. an experiment file ``OUT/experiment.yaml`` is written for them (:func:`demo_experiment_text`): every
   stage, with the phantom's truth (phase and particle labels, displacement fields, HQ scans of the
   in-situ steps) in its ``truth`` section;
3. ``tomo4d run OUT/experiment.yaml -o OUT/run`` runs it (:func:`~tomo4d.pipeline.run_experiment`) and
   renders ``OUT/run/report.html``, where every measured number sits beside its truth.

Nothing here computes a result: what the demo shows is what the runner computes for any experiment.
Run it again (``tomo4d run OUT/experiment.yaml -o OUT/run``) and every stage is cached; edit the file and
only what the edit invalidates is recomputed.  ``make demo`` must stay under 10 minutes on 2 cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._validate import check_int
from ..io import open_volume, prepare_folder, save_volume

__all__ = ["DEMO_SHAPE", "DEMO_STEPS", "DemoResult", "demo_experiment_text", "most_lithiated_step", "run_demo"]

#: HQ voxels of the demo phantom (its LQ in-situ scans have the same shape over twice the field); 96 along z
#: makes the anode 21.6 LQ voxels thick, room for DVC windows of 13 voxels
DEMO_SHAPE = (96, 64, 64)
#: time steps of the demo (T0 .. T3)
DEMO_STEPS = 4
#: in-situ steps written in another format than TIFF: step -> suffix
_FORMATS = {1: ".h5", 2: ".ome.zarr"}


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced: its folder, the experiment file, the run's outcome and wall times (s)."""

    out_dir: Path
    experiment_file: Path
    run: object
    phantom_s: float

    @property
    def report_path(self) -> Path:
        return self.run.report

    @property
    def seconds(self) -> float:
        return self.phantom_s + self.run.wall_s


def most_lithiated_step(state_of_charge) -> int:
    """The step a segmentation should label besides T0: the highest state of charge (the first of equals), or the
    last step when none is above T0's (nothing lithiates)."""
    soc = [float(v) for v in state_of_charge]
    if max(soc[1:], default=0.0) > soc[0]:
        return max(range(len(soc)), key=soc.__getitem__)
    return len(soc) - 1


def _series_files(data: Path, names) -> list[str]:
    """The in-situ LQ series, steps of :data:`_FORMATS` converted from the phantom's TIFF (then removed)."""
    files = []
    for i, name in enumerate(names):
        tif = data / "series" / f"{name}.tif"
        suffix = _FORMATS.get(i)
        if suffix is None:
            files.append(tif.relative_to(data.parent).as_posix())
            continue
        target = data / "series" / f"{name}{suffix}"
        save_volume(open_volume(tif).compute(), target)
        tif.unlink()
        files.append(target.relative_to(data.parent).as_posix())
    return files


def demo_experiment_text(doc: dict, series: list[str], true_li: list[float], *, seed: int = 0,
                         train_steps: int = 200) -> str:
    """The demo's experiment file (YAML with comments) for the phantom saved under ``data/``.

    ``doc`` is the phantom's ``data/experiment.json``; ``series`` the in-situ files (relative to the file);
    ``true_li`` the true Li concentration of the anode layer per step (:func:`_true_layer_li`); ``seed``
    the seed of every random choice of the run; ``train_steps`` InDI's training steps.
    """
    t = doc["truth"]
    names = [f"T{i}" for i in range(len(series))]
    # the second labelled step: the most lithiated one (highest state of charge, the last if none is above T0's).
    # A classifier that has not seen the darkest lithiated anode calls its top rows separator: with the last step
    # (T3, SoC 0.5) labelled the demo's thickness expansion at T2 (SoC 0.85) read 0.442 for 0.504, with T2 labelled
    # 0.487; the LQ phantom's separator interface lagged by up to 0.9 px (benchmarks/RESULTS.md, session 23)
    peak = most_lithiated_step(t["state_of_charge"])
    # four fully labelled xz planes of T0 train the segmentation ("a handful of labelled slices")
    ny = doc["params"]["shape"][1]
    planes = sorted({int(ny * f) for f in (0.125, 0.375, 0.625, 0.875)})
    psf_px = round(float(t["lq_blur_sigma_nm"]) / float(doc["params"]["lq_voxel_nm"]), 3)  # the LQ scans' PSF
    crop = min(48, *(s // 2 for s in doc["params"]["shape"][1:]))  # training crop, HQ px (the preset's 64 is 2.6x dearer per step)
    phases = t["phases"]
    mu0 = {phases[k]: round(float(v), 5) for k, v in t["neutron_mu_li_free_per_cm"].items()}
    layer = [phases[k] for k in ("MATRIX", "SILICON", "LITHIATED_SILICON")]
    return f"""\
# tomo4d demo experiment, written by `tomo4d demo` beside the phantom's scans (data/).
# Run it again with: tomo4d run experiment.yaml -o run   (cached stages are skipped)
name: tomo4d demo (synthetic Si anode, {len(series)} steps)
inputs:
  series: [{', '.join(series)}]   # any format open_volume reads
  time_s: {json.dumps([float(v) for v in t['time_s']])}
  state_of_charge: {json.dumps([float(v) for v in t['state_of_charge']])}
  repeat: data/repeat.tif          # T0 scanned twice: the noise floor of the residual maps
  training_pair: {{lq: data/lq.tif, hq: data/hq.tif}}   # InDI's training data (LQ 100 nm, HQ 50 nm)
  neutron: data/neutron/T*.tif     # neutron attenuation (1/cm), 4x coarser voxels over the same field
  neutron_spectra: data/spectra/collector_T*.csv   # time-of-flight transmission of the Cu collector
  projections: data/projections/T0_slab.nxs   # NXtomo projections of a T0 slab (reconstruct)
enhance:
  preset: small
  train: {{steps: {train_steps}, crop: {crop}, val_every: {max(1, train_steps // 4)}, checkpoint_every: 50, seed: {seed}}}   # shortened for the demo; the validation curve at 4 points
  # steps: not set: the number of InDI steps recommended by the training's validation sweep (balanced rule)
  seed: {seed}
  apply_to_series: false           # the analysis stages read the LQ series
  truth_hq: data/series_hq/T*.tif  # HQ scans of the in-situ steps: quality against truth
  truth_particles: data/truth/particles_hq_T*.tif   # true particles on those HQ grids: hallucination audit
segment:                           # lithiated silicon appears after T0: label a plane set of its most lithiated step too
  labels: [data/truth/labels_lq_T0.tif, data/truth/labels_lq_{names[peak]}.tif]
  label_steps: [0, {peak}]
  slices: {json.dumps(planes)}       # only these xz planes of each labelled step are used for training
  slice_axis: 1
  seed: {seed}
quantify: {{}}
dvc:                               # the route measured most accurate at battery expansions (RESULTS.md, issue 15)
  node_spacing: 4
  method: global                   # one regularised field with brightness/contrast fields (lithiation)
  # global_options: the defaults are the converged route (Gauss-Newton, cubic sampling, regularisation by the scans'
  # noise, 0.2 on these: at 0.05 the converged field follows their noise; the grey fields held near-flat across the
  # tied interfaces),
  # not an iterate capped by L-BFGS; with axial_start one level (RESULTS.md, sessions 26-27)
  axial_start: true                # a non-uniform stretch along z fitted first, every pair
  axial_lateral: true              # with the in-plane expansion
  incremental: true                # T(n-1) -> Tn composed onto T0 -> T(n-1): one step's change per pair
  deconvolve_iterations: 20        # Richardson-Lucy with the scans' PSF: blur is the largest DVC error
  deconvolve_psf_sigma_px: {psf_px}
  mask: above_collector            # the rigid collector left out (quantify's T0 interface), the separator kept
  interfaces: true                 # the field tied to quantify's interfaces of each step: LQ blur rounds their kinks
particles: {{particle_class: [2, 3]}}   # silicon + lithiated silicon: a particle stays one while it lithiates
residual: {{}}
lithiation: {{truth_modes: data/truth/particles.csv}}
neutron:
  li_free_mu_per_cm: {json.dumps(mu0)}   # Li-free attenuation of each X-ray phase, 1/cm
  layer_phases: {json.dumps(layer)}      # the anode: matrix, silicon, lithiated silicon
  psf_sigma_nm: {float(t['neutron_blur_sigma_nm'])}
  joint_phases: 4
neutron_spectra:                   # Bragg edges of the Cu collector: lattice strain per step
  bragg:
    - {{name: Cu111, lattice_parameter_angstrom: 3.615, hkl: [1, 1, 1], profile: gaussian}}
    - {{name: Cu200, lattice_parameter_angstrom: 3.615, hkl: [2, 0, 0], profile: gaussian}}
reconstruct:                       # FBP of inputs.projections (algotom engine), centre found
  rings: none
  truth: data/truth/attenuation_T0_slab.tif   # the attenuation the projections were made of
truth:                             # the phantom's truth, shown beside every measured number
  labels: data/truth/labels_lq_T*.tif
  particles: data/truth/particles_lq_T*.tif
  displacement: data/truth/displacement_T*.npz
  li_concentration_mol_l: {json.dumps([round(v, 4) for v in true_li])}
  lattice_strain: {{Cu111: 0.0, Cu200: 0.0}}
"""


def _true_layer_li(data: Path, doc: dict) -> list[float]:
    """True mean Li (mol/L) of the anode layer per step, over the neutron slabs the neutron stage averages.

    The phantom's Li concentration per phase on its true LQ labels, block-averaged onto the neutron grid,
    through :func:`tomo4d.neutron.layer_lithium` with the stage's layer phases and margin (3 PSF sigma).
    """
    import numpy as np

    from ..neutron import LiConcentration, bin_to_grid, layer_lithium, theoretical_lithium_calibration

    t = doc["truth"]
    b = int(doc["params"]["neutron_bin"])
    c_of = np.zeros(max(t["phases"].values()) + 1)
    for name, c in t["li_concentration_mol_l"].items():
        c_of[t["phases"][name]] = c
    layer = [t["phases"][k] for k in ("MATRIX", "SILICON", "LITHIATED_SILICON")]
    margin_px = 3 * float(t["neutron_blur_sigma_nm"]) / (b * float(doc["params"]["lq_voxel_nm"]))
    out = []
    for name in t["steps"]:
        lab = open_volume(data / "truth" / f"labels_lq_{name}.tif").numpy()
        c = bin_to_grid(c_of[lab], b) / np.float32(1e3)  # mol/L -> mol/cm^3
        li = LiConcentration(c, np.zeros_like(c), theoretical_lithium_calibration())
        out.append(float(layer_lithium(li, lab, layer, bin_factor=b, margin_px=margin_px).concentration_mol_l))
    return out


def _write_spectra(exp, data: Path, *, seed: int) -> None:
    """Time-of-flight transmission spectra of the Cu collector (its Bragg edges) of every step, as a beamline
    would deliver them: Poisson counts of 1e5 per bin (open beam 4e5), 1-7 A in 600 bins, a 3 mm path
    (:func:`tomo4d.phantom.neutron.transmission_spectra`), CSV: wavelength, transmission, sigma."""
    import numpy as np

    from ..phantom.neutron import transmission_spectra

    lam, n0 = np.linspace(1.0, 7.0, 600), 1e5
    rng = np.random.default_rng(seed)
    (data / "spectra").mkdir()
    for step, name in enumerate(exp.truth.step_names):
        sp = transmission_spectra(exp, step, wavelengths_a=lam, path_length_mm=3.0)
        i = sp.region_names.index("collector")
        counts = np.maximum(rng.poisson(n0 * sp.transmission[i]), 1)
        t = counts / (rng.poisson(4 * n0, size=lam.size) / 4.0)
        sigma = t * np.sqrt(1.0 / counts + 1.0 / (4 * n0))
        np.savetxt(data / "spectra" / f"collector_{name}.csv", np.column_stack([lam, t, sigma]), delimiter=",",
                   header="wavelength,transmission,sigma", comments="")


def _write_projections(data: Path, *, seed: int, rows: int = 8) -> None:
    """Projections of a slab of ``rows`` z slices of the HQ T0 scan (grey level -> attenuation up to 0.05 per
    pixel), 120 angles over 180 degrees, flats, darks, Poisson noise (2e4 photons), the axis 2.5 px off centre
    (:func:`tomo4d.reconstruct.simulate_scan`), as NXtomo ``data/projections/T0_slab.nxs``; the true attenuation
    on the reconstruction grid as ``data/truth/attenuation_T0_slab.tif``."""
    import numpy as np

    from ..reconstruct import save_nxtomo, simulate_scan
    from ..volume import Volume

    hq = open_volume(data / "hq.tif")
    z0 = max(hq.shape[0] // 2 - rows // 2, 0)
    grey = np.asarray(hq.data[z0:z0 + rows], dtype=np.float32)
    mu = 0.05 * np.clip(grey, 0, None) / max(float(grey.max()), 1e-6)
    fine = np.repeat(np.repeat(np.repeat(mu, 2, axis=0), 2, axis=1), 2, axis=2)
    margin = max(hq.shape[2] // 4, 8)
    scan = simulate_scan(phantom=fine, n_angles=120, center_offset=2.5, photons=2e4, margin=margin, seed=seed,
                         pixel_size_nm=float(hq.voxel_size_nm[2]))
    (data / "projections").mkdir()
    save_nxtomo(scan, data / "projections" / "T0_slab.nxs")
    truth = np.pad(scan.truth, ((0, 0), (margin, margin), (margin, margin)))
    save_volume(Volume(truth.astype(np.float32), voxel_size_nm=hq.voxel_size_nm[2]),
                data / "truth" / "attenuation_T0_slab.tif")


def run_demo(out_dir, *, overwrite: bool = False, seed: int = 0, progress: Callable | None = None,
             shape=DEMO_SHAPE, n_steps: int = DEMO_STEPS, train_steps: int = 200) -> DemoResult:
    """Write the demo experiment into ``out_dir`` and run it (module docstring).

    Parameters
    ----------
    out_dir : path-like
        Output folder; must not exist unless ``overwrite`` is set (and then only a folder tomo4d wrote).
    overwrite : bool
        Replace an earlier demo folder.
    seed : int
        Seed of the phantom and of every random choice of the run (the demo is reproducible).
    progress : callable, optional
        The runner's progress callback (:func:`tomo4d.pipeline.progress.run_progress`).
    shape, n_steps, train_steps
        Size of the phantom and InDI's training steps (tests use a smaller, shorter one).
    """
    from ..phantom import make_experiment
    from .execute import run_experiment
    from .experiment import load_experiment

    check_int("seed", seed, minimum=0)
    check_int("n_steps", n_steps, minimum=2)
    check_int("train_steps", train_steps, minimum=1)
    out = prepare_folder(out_dir, overwrite=overwrite, kind="demo")  # everything is validated: claim the folder
    t0 = time.perf_counter()
    exp = make_experiment(shape=tuple(shape), n_steps=n_steps, seed=seed)
    data = exp.save(out / "data", fields="full")
    _write_spectra(exp, data, seed=seed)
    _write_projections(data, seed=seed)
    doc = json.loads((data / "experiment.json").read_text(encoding="utf-8"))
    series = _series_files(data, doc["truth"]["steps"])
    exp_file = out / "experiment.yaml"
    exp_file.write_text(demo_experiment_text(doc, series, _true_layer_li(data, doc), seed=seed,
                                            train_steps=train_steps), encoding="utf-8")
    phantom_s = time.perf_counter() - t0
    res = run_experiment(load_experiment(exp_file), out / "run", source=exp_file, progress=progress)
    return DemoResult(out_dir=out, experiment_file=exp_file, run=res, phantom_s=phantom_s)
