"""``tomo4d phantom``: write a synthetic in-situ experiment with its ground truth."""

# Library imports stay inside the commands: `tomo4d --help` imports every command module, and the
# library packages cost 15-340 ms each to import (measured, issue 17); core ones sit at the top.
from __future__ import annotations

import click

from ._paths import declare_paths
from ._util import emit, parse_triple, progress_bar


@declare_paths(outputs=("out_dir",))
@click.command()
@click.argument("out_dir", type=click.Path(path_type=str))
@click.option("--shape", default="64", show_default=True, help="Voxels Z,Y,X of the HQ and LQ grids (one value or three).")
@click.option("--steps", default=7, show_default=True, help="Number of time steps T0..Tn (including T0).")
@click.option("--seed", default=0, show_default=True, help="Seed: the same seed gives the same bytes.")
@click.option("--core-shell", default=0.1, show_default=True, help="Share of particles lithiating core-shell.")
@click.option("--series-sample", type=click.Choice(["same", "twin"]), default="same", show_default=True,
              help="In-situ series of the training-pair sample or of a second identical one.")
@click.option("--phase-contrast", default=0.0, show_default=True, help="Strength of phase-contrast edge fringes.")
@click.option("--pair-drift", default=0.0, show_default=True, metavar="NM",
              help="RMS local misregistration (nm) of the LQ training scan left after its affine part.")
@click.option("--fields", type=click.Choice(["coarse", "full", "none"]), default="coarse", show_default=True,
              help="Displacement fields saved every 4th LQ voxel, every voxel, or not.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def phantom(out_dir, shape, steps, seed, core_shell, series_sample, phase_contrast, pair_drift, fields, overwrite,
            as_json):
    """Generate a synthetic in-situ battery experiment (HQ/LQ pair, series, truth) into OUT_DIR."""
    from ..phantom import make_experiment

    exp = make_experiment(shape=parse_triple(shape, name="--shape", kind=int), n_steps=steps, seed=seed,
                          core_shell_fraction=core_shell, series_sample=series_sample,
                          phase_contrast=phase_contrast, pair_drift_nm=pair_drift)
    with progress_bar(f"writing {out_dir}") as progress:
        out = exp.save(out_dir, overwrite=overwrite, fields=fields, progress=progress)
    t = exp.truth
    info = {"out_dir": str(out), "shape": list(exp.params.shape), "seed": exp.params.seed,
            "non_lithiated_si_volume_nm3": list(t.non_lithiated_si_volume_nm3), **t.summary()}
    emit(info, as_json=as_json, text=[
        f"wrote {out}: {exp!r}",
        *(f"  {name}  SoC {t.state_of_charge[i]:.2f}  thickness {t.thickness_nm[i] / 1000:.3f} um  "
          f"non-lithiated Si {t.non_lithiated_si_volume_nm3[i] / 1e9:.3f} um^3"
          for i, name in enumerate(t.step_names))])
