"""Every ``tomo4d ...`` command in README.md's code blocks runs exactly as written (issue 21).

The commands are read from the README itself (fenced and indented code blocks), so a command added there
without a recipe here fails :func:`test_every_readme_command_has_a_recipe`.  Each command runs in one shared
work folder, in README order, with the input files it names made there first: the neutron spectra from the
measured iron powder (../shared/data, else a synthetic bcc-Fe edge) and a lithium attenuation model, the
volumes from the README's own ``tomo4d phantom exp/ ...`` command.  The neutron commands run by default; the
volume commands (phantom, registration, DVC, enhancement, segmentation: minutes in all) are ``slow``.
Skipped, with the reason stated in :data:`SKIP`: ``make``, the demo and full experiment runs (minutes; the
demo has its own test), the Dask cluster runs, and a conversion whose input is 1 GiB.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from tomo4d.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
REAL_IRON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "iron_powder_transmission.csv"


def readme_commands(text: str | None = None) -> list[str]:
    """``tomo4d ...`` lines of the README's code blocks (fenced or indented), comments stripped, in order."""
    text = README.read_text() if text is None else text
    out, fenced = [], False
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        indented = line.startswith("    ") and not line.lstrip().startswith(("-", "*"))
        if not (fenced or indented):
            continue
        body = line.strip()
        if not body.startswith("tomo4d "):
            continue
        out.append(" ".join(shlex.split(body, comments=True)))
    return out


#: Commands not run, with the reason (prefix match).
SKIP = {
    "tomo4d demo": "the full demo experiment (minutes); tests/cli/test_demo_cli.py runs it",
    "tomo4d run experiment.yaml -o OUT": "runs a whole experiment (minutes); tests/pipeline run the runner",
    "tomo4d report OUT": "needs the output of the full run above (skipped); tests/report cover report",
    "tomo4d run exp.yaml -o OUT --workers": "starts a Dask cluster of 4 processes (2 shared cores here)",
    "tomo4d run exp.yaml -o OUT --scheduler": "needs a running Dask scheduler at tcp://HOST:8786",
    "tomo4d convert raw.bin out.h5 --shape 512,1024,1024": "its input is a 1 GiB raw volume",
}
#: Commands that run by default (cheap); everything else not in SKIP is marked slow.
FAST = ("tomo4d --version", "tomo4d neutron ", "tomo4d run --schema", "tomo4d init ", "tomo4d run experiment.yaml --check")
#: Commands that train or sample InDI with the README's options (minutes together; the later ones read the model the
#: first trains): also ``heavy``, outside CI's slow pass (tests/enhance covers the same commands on small data).
HEAVY = ("tomo4d enhance ",)


def _skip_reason(cmd: str) -> str | None:
    for prefix, why in SKIP.items():
        if cmd.startswith(prefix):
            return why
    return None


def test_every_readme_command_has_a_recipe():
    cmds = readme_commands()
    assert len(cmds) >= 30, cmds
    assert "tomo4d neutron bragg iron.csv --window 3.8,4.4 --lattice 2.8665 --hkl 110" in cmds
    assert "tomo4d neutron plan --target-um 5" in cmds
    for c in cmds:
        if _skip_reason(c) is None:
            names = [t for t in shlex.split(c) if "=" not in t and re.search(r"\.(tif|h5|nxs|txt|csv|vol|zarr|yaml|json|vtk|png)$|/$", t)]
            for n in names:
                assert n in MAKERS or n in PRODUCED, f"README command {c!r}: no recipe for input {n!r}"


def test_extraction_reads_fenced_and_indented_blocks():
    text = "x\n```bash\ntomo4d a b   # note\nls\n```\n\n    tomo4d c d  # e\n- tomo4d not code\n    tomo4d e \\\n    f\n"
    assert readme_commands(text) == ["tomo4d a b", "tomo4d c d", "tomo4d e f"]


# --- inputs ---------------------------------------------------------------------------------------------

def _iron(ws: Path):
    p = ws / "iron.csv"
    if REAL_IRON.is_file():
        shutil.copy(REAL_IRON, p)
        return
    from tomo4d.neutron import bragg_edge_model  # a bcc-Fe (110) edge like the measured one

    w = np.linspace(3.5, 4.6, 250)
    t = bragg_edge_model(w, edge_angstrom=4.0538, width_angstrom=0.008, tail_angstrom=0.015, a0=0.9,
                         b0_per_angstrom=0.02, a_hkl=0.3, b_hkl_per_angstrom=0.01)
    s = np.full_like(t, 0.003)
    t = t + np.random.default_rng(0).normal(0, s)
    p.write_text("wl,trans,err\n" + "\n".join(f"{a:.6f},{b:.6f},{c:.6f}" for a, b, c in zip(w, t, s)))


def _li_spectrum(ws: Path):
    from tomo4d.neutron import li_attenuation_per_cm, li_concentration_from_composition

    w = np.linspace(1.0, 6.0, 120)
    c = li_concentration_from_composition("Li", density_g_per_cm3=0.534)
    mu = li_attenuation_per_cm(w, li_concentration_mol_per_cm3=c, li6_fraction=0.0759)
    s = 0.01 * mu
    mu = mu + np.random.default_rng(1).normal(0, s)
    (ws / "spectrum.csv").write_text("wl,mu,err\n" + "\n".join(f"{a:.5f},{b:.6f},{e:.6f}" for a, b, e in zip(w, mu, s)))


def _raw_counts(ws: Path):
    """counts.csv / ob.csv: raw ToF counts (L = 9 m, 10 us bins) of the iron powder and the open beam.

    With ../shared/data: the measured open beam and Poisson counts of the measured iron transmission;
    else a synthetic open beam and Fe (110) edge."""
    from tomo4d.neutron import bragg_edge_model, read_spectrum_csv, tof_bin_wavelengths

    rng = np.random.default_rng(3)
    ob_real = REAL_IRON.parent / "openbeam_tof_counts.csv"
    if REAL_IRON.is_file() and ob_real.is_file():
        ob = np.genfromtxt(ob_real, delimiter=",", skip_header=1)[:, 2]
        wl = tof_bin_wavelengths(ob.size, flight_path_m=9.0, bin_width_us=10.0)
        fe = read_spectrum_csv(REAL_IRON)
        t = np.interp(wl, fe.wavelength_angstrom, fe.values, left=np.nan)
    else:
        wl = tof_bin_wavelengths(2400, flight_path_m=9.0, bin_width_us=10.0)
        ob = 1e5 * np.exp(-0.5 * ((wl - 3.0) / 1.5) ** 2) + 100
        t = bragg_edge_model(wl, edge_angstrom=4.0538, width_angstrom=0.008, tail_angstrom=0.015, a0=0.9,
                             b0_per_angstrom=0.02, a_hkl=0.3, b_hkl_per_angstrom=0.01)
    keep = np.flatnonzero(np.isfinite(t))
    counts = rng.poisson(ob[keep] * t[keep])
    (ws / "counts.csv").write_text(",stack,counts\n" + "".join(f"{k + 1},{k + 1},{c}\n" for k, c in zip(keep, counts)))
    (ws / "ob.csv").write_text(",stack,counts\n" + "".join(f"{k + 1},{k + 1},{ob[k]:.0f}\n" for k in keep))


def _phantom(ws: Path) -> Path:
    """The README's own phantom command (run once: by the first command needing its volumes, or by itself)."""
    exp = ws / "exp"
    if not (exp / "hq.tif").is_file():
        cmd = next(c for c in readme_commands() if c.startswith("tomo4d phantom exp/"))
        assert main(shlex.split(cmd)[1:]) == 0, cmd
    return exp


def _copy(src: str):
    def make(ws: Path, name: str):
        shutil.copy(_phantom(ws) / src, ws / name)
    return make


#: The LQ scan enhanced by ``enhance apply`` is the phantom's central 48^3 (100 nm voxels: the HQ field of
#: view), so that the x2 output is 96^3 like the HQ truth it is evaluated against (the whole LQ scan, 192^3
#: out, costs over 10 min on 2 shared cores).
CROP = (slice(24, 72),) * 3


def _crop(src: str):
    def make(ws: Path, name: str):
        from tomo4d import Volume
        from tomo4d.io import open_volume, save_volume

        v = open_volume(_phantom(ws) / src)
        save_volume(Volume(v.numpy()[CROP], v.voxel_size_nm, v.metadata), ws / name)
    return make


def _tif(ws: Path, name: str):
    import tifffile

    return tifffile.imread(_phantom(ws) / name)


def _scan_h5(ws: Path, name: str):
    import h5py

    with h5py.File(ws / name, "w") as f:
        f.create_dataset("/entry/data/data", data=_tif(ws, "hq.tif"))


def _slices(ws: Path, name: str):
    import tifffile

    d = ws / name
    d.mkdir(exist_ok=True)
    for i, sl in enumerate(_tif(ws, "hq.tif")[:24]):
        tifffile.imwrite(d / f"slice_{i:04d}.tif", sl)


def _vol(ws: Path, name: str):
    from tomo4d.io import open_volume, save_volume

    save_volume(open_volume(_phantom(ws) / "hq.tif"), ws / name)


def _blurred(ws: Path, name: str):
    import tifffile
    from scipy.ndimage import gaussian_filter

    tifffile.imwrite(ws / name, gaussian_filter(_tif(ws, "hq.tif"), 1.0).astype(np.float32))


def _scribbles(ws: Path, name: str):
    import tifffile

    lab = _tif(ws, "truth/labels_hq_T0.tif")
    keep = np.zeros(lab.shape, bool)
    keep[::8, ::3, ::3] = True
    tifffile.imwrite(ws / name, np.where(keep, lab, 0).astype(np.uint8))


def _projections(ws: Path, name: str):
    """A small simulated scan (2 rows x 48 px, 90 angles): NXtomo, or TIFF projections/flats/darks + angles."""
    import tifffile

    from tomo4d.reconstruct import save_nxtomo, simulate_scan

    scan = simulate_scan((2, 48), n_angles=90, center_offset=-2.25, photons=2e4, margin=12, seed=4)
    if name.endswith(".nxs"):
        save_nxtomo(scan, ws / name)
        return
    for n, a in (("proj.tif", scan.projections), ("flats.tif", scan.flats), ("darks.tif", scan.darks)):
        tifffile.imwrite(ws / n, a.astype(np.uint16))
    (ws / "angles.txt").write_text(" ".join(map(str, scan.angles_deg)))


def _scans(ws: Path, name: str):
    import tifffile

    d = ws / name
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    for i in (0, 1, 2):
        tifffile.imwrite(d / f"T{i}.tif", rng.random((16, 16, 16), dtype=np.float32))


def _bands(ws: Path, name: str):
    """Per-band volumes of the 5D phantom (32^3 experiment, neutron grid 8^3, 200 bands) with what a user
    knows: per-band noise, Li concentration and Li-free attenuation from the X-ray phases, the copper mask."""
    from tomo4d.phantom import make_experiment
    from tomo4d.phantom.neutron5d import neutron_5d

    d = neutron_5d(make_experiment(shape=(32, 32, 32), n_steps=2, seed=0), steps=[1])
    c = d.li_concentration_mol_per_cm3[0]
    np.savez(ws / name, wavelength_angstrom=d.wavelengths_angstrom, mu_per_cm=d.mu_per_cm[0],
             sigma_per_cm=d.sigma_per_cm, li_concentration_mol_per_cm3=c,
             other_mu_per_cm=d.other_mu_per_cm[0], crystal_mask=d.copper_fraction[0] > 0.99)


def _electrode(ws: Path, name: str):
    """The T0 anode's rows (where the truth's T0 labels hold anode solids: matrix, silicon, lithiated silicon) as a
    mask, the electrode a user segments first."""
    import tifffile

    lab = _tif(ws, "truth/labels_hq_T0.tif")
    rows = np.isin(lab, (1, 2, 3)).mean(axis=(1, 2)) > 0.2
    tifffile.imwrite(ws / name, np.broadcast_to(rows[:, None, None], lab.shape).astype(np.uint8))


MAKERS = {
    "iron.csv": lambda ws, n: _iron(ws), "spectrum.csv": lambda ws, n: _li_spectrum(ws),
    "counts.csv": lambda ws, n: _raw_counts(ws), "ob.csv": lambda ws, n: _raw_counts(ws),
    "scan.tif": _copy("hq.tif"), "scan.h5": _scan_h5, "slices/": _slices, "scan.vol": _vol,
    "hq.tif": _copy("hq.tif"), "lq.tif": _copy("lq.tif"), "lq_up.tif": _copy("lq.tif"), "indi.tif": _blurred,
    "T0.tif": _copy("series_hq/T0.tif"), "T1.tif": _copy("series_hq/T1.tif"), "T3.tif": _copy("series_hq/T3.tif"),
    "T0_repeat.tif": _copy("repeat_hq.tif"), "T1_lq.tif": _crop("series/T1.tif"),
    "scribbles.tif": _scribbles, "truth_labels.tif": _copy("truth/labels_hq_T1.tif"), "scans/": _scans,
    "scan.nxs": _projections, "proj.tif": _projections, "flats.tif": _projections, "darks.tif": _projections,
    "angles.txt": _projections, "bands.npz": _bands, "electrode.tif": _electrode,
}
#: Files the README's commands write for later ones (made by the command itself, never here).
PRODUCED = {"exp/", "phi.json", "field.h5", "strain.vtk", "strain.h5", "residual.tif", "model/", "T1_indi.ome.zarr",
            "T1_indi.tif", "seg_model/", "T1_labels.tif", "T1_particles.tif", "edges.png", "experiment.yaml",
            "scan.ome.zarr", "out_dir", "OUT", "trans.csv", "scan_rec.ome.zarr", "scan_rec.tif", "rec.tif"}


def _indi_stand_in(ws: Path, name: str):
    """What `enhance apply` writes (the T1 scan on the HQ grid), when the heavy InDI commands did not run."""
    from tomo4d.io import open_volume, save_volume

    save_volume(open_volume(_phantom(ws) / "series_hq/T1.tif"), ws / name)


#: Stand-ins for outputs of the ``heavy`` commands (CI's slow pass leaves those out): made only for a later
#: command that reads one when the heavy command did not write it.
STAND_INS = {"T1_indi.ome.zarr": _indi_stand_in}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def _params():
    out = []
    for i, c in enumerate(readme_commands()):
        why = _skip_reason(c)
        marks = [pytest.mark.skip(reason=why)] if why else ([] if c.startswith(FAST) else [pytest.mark.slow])
        if c.startswith(HEAVY):
            marks.append(pytest.mark.heavy)
        out.append(pytest.param(c, marks=marks, id=f"{i:02d}-{c[7:47]}"))
    return out


@pytest.mark.parametrize("cmd", _params())
def test_readme_command_runs_as_written(cmd, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    args = shlex.split(cmd)[1:]
    for a in args:
        if a in MAKERS and not (workspace / a).exists():
            MAKERS[a](workspace, a)
        if a in STAND_INS and not cmd.startswith(HEAVY) and not (workspace / a).exists():
            STAND_INS[a](workspace, a)
    if cmd == "tomo4d run experiment.yaml --check":  # fill the template's TODOs as its user would
        y = workspace / "experiment.yaml"
        y.write_text(y.read_text().replace("[TODO, TODO, TODO]", "[0, 3600, 7200]")
                     .replace("voxel_size_nm: TODO", "voxel_size_nm: 50"))
    for a in _outputs(args):  # the tour writes some paths twice (dvc field.h5; convert scan.vol scan.tif)
        p = workspace / a
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    if cmd.startswith("tomo4d phantom exp/"):
        assert (_phantom(workspace) / "experiment.json").is_file()
        return
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, f"{cmd}\n{cap.err[-2000:]}"
    if cmd.startswith("tomo4d neutron bragg"):
        assert "midpoint" in cap.out and "NOT ok" not in cap.out, cap.out
        edge = next(ln for ln in cap.out.splitlines() if ln.startswith("edge (midpoint) - expected"))
        assert abs(float(edge.split()[4])) < 0.002, edge  # Fe(110): 2 d110 = 4.0538 Å
    if cmd.startswith("tomo4d neutron plan"):
        assert "neutron" in cap.out and "preset" in cap.out, cap.out


def _outputs(args: list[str]) -> set[str]:
    """Paths a command writes that may exist from an earlier command: after -o, and convert's DST."""
    outs = {args[i + 1] for i, a in enumerate(args[:-1]) if a == "-o" and args[i + 1] in PRODUCED | set(MAKERS)}
    if args[0] == "convert":
        outs.add([a for a in args if not a.startswith("-")][2])
    return outs
