"""Every command x every class of bad input: one line on stderr, exit 2, the input named, nothing written.

:data:`TABLE` has one row per command and one cell per class in :data:`CLASSES`: the
invocations that must be refused (each with a fragment the message must contain), or
``NA("why")`` where the class cannot apply.  A new command, or a new class, fails
:func:`test_table_covers_every_command_and_class` until its row is filled in.  The
path classes (an output resolving to an input, two outputs on one path, an existing
output, a missing input) are proven generically for every command in ``test_paths.py``.

Placeholders: ``{grey}`` a float32 grey volume, ``{nan}`` the same with NaN voxels,
``{labels}`` phase labels, ``{particles}`` particle labels, ``{mask255}`` a {0, 255}
mask, ``{greylab}`` a grey image given as labels, ``{neglab}`` labels with negative
values, ``{lq}``/``{hq}`` an LQ/HQ pair, ``{lqnan}``/``{hqnan}`` with NaN voxels,
``{field}`` a DVC field (on the grid of ``{grey}``), ``{small}`` a volume of another shape, ``{enh}`` an InDI model folder, ``{seg}`` a segmentation model,
``{spectrum}`` a transmission spectrum, ``{trunc}`` a truncated TIFF stack, ``{out.EXT}``
a fresh output path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest

from tomo4d.cli import cli, main
from tomo4d.cli._paths import leaf_commands

pytest.importorskip("torch")


@dataclass(frozen=True)
class NA:
    """A class of bad input that does not apply to a command, and why."""

    why: str


CLASSES = ("non-finite", "bad-labels", "out-of-range", "unparsable", "corrupt-file", "device")

TRUNC = "is truncated"  # what every truncated-file message says
NONFINITE = "non-finite"
NO_LABELS = NA("takes no label image")
NO_DEVICE = NA("runs on the CPU only")
NO_IMAGE = NA("reads no grey-value image")
TOF = ["--flight-path", "10", "--bin-width", "500", "--thickness-cm", "0.2", "--li6", "0.0759"]  # neutron maps
BANDS = ["-o", "{out.npz}", "--open-beam", "{grey}", "--flight-path", "10", "--bin-width", "500", "--pixel-size",
         "20000"]  # neutron bands

TABLE: dict[tuple[str, ...], dict[str, object]] = {
    ("info",): {
        "non-finite": NA("describes a file, NaN included (the range is of the finite samples)"),
        "bad-labels": NO_LABELS, "out-of-range": NA("no numeric option"),
        "unparsable": [(["{grey}", "--shape", "a,b,c"], "--shape")],
        "corrupt-file": [(["{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("convert",): {
        "non-finite": NA("copies voxels as they are: NaN is data, not a result"),
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{grey}", "{out.ome.zarr}", "--levels", "30"], "levels"),
                         (["{grey}", "{out.ome.zarr}", "--levels", "0"], "levels"),
                         (["{grey}", "{out.tif}", "--voxel-size", "-5"], "voxel")],
        "unparsable": [(["{grey}", "{out.tif}", "--voxel-size", "abc"], "--voxel-size")],
        "corrupt-file": [(["{trunc}", "{out.tif}"], TRUNC)], "device": NO_DEVICE},
    ("demo",): {
        "non-finite": NA("no input"), "bad-labels": NO_LABELS,
        "out-of-range": [(["{out.d}", "--seed", "-1"], "seed")],
        "unparsable": [(["{out.d}", "--seed", "abc"], "seed")],
        "corrupt-file": NA("no input"), "device": NO_DEVICE},
    ("phantom",): {
        "non-finite": NA("no input"), "bad-labels": NO_LABELS,
        "out-of-range": [(["{out.d}", "--shape", "4096"], "memory"), (["{out.d}", "--steps", "0"], "steps"),
                         (["{out.d}", "--core-shell", "1.5"], "core")],
        "unparsable": [(["{out.d}", "--shape", "32.5"], "shape")],
        "corrupt-file": NA("no input"), "device": NO_DEVICE},
    ("quality",): {
        "non-finite": [(["{grey}", "{nan}"], NONFINITE), (["{nan}", "{grey}"], NONFINITE)],
        "bad-labels": NA("--mask takes any non-zero values"),
        "out-of-range": [(["{grey}", "{grey}", "--voxel-size", "0"], "voxel")],
        "unparsable": [(["{grey}", "{grey}", "--metrics", "psnr,bogus"], "bogus")],
        "corrupt-file": [(["{grey}", "{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("register",): {
        "non-finite": [(["{grey}", "{nan}"], NONFINITE)],
        "bad-labels": NA("--mask takes any non-zero values"),
        "out-of-range": [(["{grey}", "{grey}", "--binning", "64"], "binning"),
                         (["{grey}", "{grey}", "--multimodal", "--search", "-3"], "search"),
                         (["{grey}", "{grey}", "--multimodal", "--fixed-psf-nm", "-5"], "fixed_psf_sigma_nm"),
                         (["{grey}", "{grey}", "--chunk-budget-mb", "0"], "chunk_budget_mb"),
                         (["{grey}", "{grey}", "--multimodal", "--chunk-budget-mb", "64"], "--chunk-budget-mb")],
        "unparsable": [(["{grey}", "{grey}", "--binning", "a,b"], "--binning")],
        "corrupt-file": [(["{trunc}", "{grey}"], TRUNC)], "device": NO_DEVICE},
    ("dvc",): {
        "non-finite": [(["{nan}", "{grey}", "-o", "{out.h5}"], NONFINITE)],
        "bad-labels": NA("--mask takes any non-zero values"),
        "out-of-range": [(["{grey}", "{grey}", "-o", "{out.h5}", "--node-spacing", "0"], "node_spacing"),
                         (["{grey}", "{grey}", "-o", "{out.h5}", "--search", "-3"], "search"),
                         (["{grey}", "{grey}", "-o", "{out.h5}", "--smooth", "nan"], "smooth"),
                         (["{grey}", "{grey}", "-o", "{out.h5}", "--chunk-budget-mb", "-1"], "--chunk-budget-mb")],
        "unparsable": [(["{grey}", "{grey}", "-o", "{out.h5}", "--pyramid", "a,b"], "--pyramid")],
        "corrupt-file": [(["{grey}", "{trunc}", "-o", "{out.h5}"], TRUNC)],
        "device": [(["{grey}", "{grey}", "-o", "{out.h5}", "--backend", "torch", "--device", "cuda"], "cuda")]},
    ("strain",): {
        "non-finite": NA("reads a field; NaN nodes are its own failed-node status"),
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{field}", "-o", "{out.h5}", "--split-z", "nan"], "--split-z")],
        "unparsable": [(["{field}", "-o", "{out.txt}"], ".vtk")],
        "corrupt-file": [(["{trunc}", "-o", "{out.h5}"], "{trunc}")], "device": NO_DEVICE},
    ("residual",): {
        "non-finite": [(["{grey}", "{nan}", "{field}", "-o", "{out.tif}"], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{grey}", "{grey}", "{field}", "-o", "{out.tif}", "--sigma", "-1"], "sigma"),
                         (["{small}", "{small}", "{field}", "-o", "{out.tif}"], "shape")],
        "unparsable": NA("no option takes text"),
        "corrupt-file": [(["{grey}", "{trunc}", "{field}", "-o", "{out.tif}"], TRUNC)], "device": NO_DEVICE},
    ("enhance", "train"): {
        "non-finite": [(["--lq", "{lq}", "--hq", "{hqnan}", "-o", "{out.d}"], "--hq"),
                       (["--lq", "{lqnan}", "--hq", "{hq}", "-o", "{out.d}"], "--lq")],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["--lq", "{lq}", "--hq", "{hq}", "-o", "{out.d}", "--steps", "0"], "steps")],
        "unparsable": [(["--lq", "{lq}", "--hq", "{hq}", "-o", "{out.d}", "--config", "{spectrum}"], "config")],
        "corrupt-file": [(["--lq", "{trunc}", "--hq", "{hq}", "-o", "{out.d}"], TRUNC)],
        "device": [(["--lq", "{lq}", "--hq", "{hq}", "-o", "{out.d}", "--device", "cuda"], "cuda"),
                   (["--lq", "{lq}", "--hq", "{hq}", "-o", "{out.d}", "--device", "cpu", "--precision", "fp16"],
                    "fp16")]},
    ("enhance", "apply"): {
        "non-finite": [(["{enh}", "{lqnan}", "{out.tif}"], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{enh}", "{lq}", "{out.tif}", "--batch", "0"], "batch"),
                         (["{enh}", "{lq}", "{out.tif}", "--samples", "0"], "--samples"),
                         (["{enh}", "{lq}", "{out.tif}", "--steps", "0"], "steps")],
        "unparsable": [(["{spectrum}", "{lq}", "{out.tif}"], "{spectrum}")],
        "corrupt-file": [(["{enh}", "{trunc}", "{out.tif}"], TRUNC)],
        "device": [(["{enh}", "{lq}", "{out.tif}", "--device", "cuda"], "cuda"),
                   (["{enh}", "{lq}", "{out.tif}", "--device", "cpu", "--precision", "fp16"], "fp16")]},
    ("enhance", "sweep"): {
        "non-finite": [(["{enh}", "--lq", "{lqnan}", "--hq", "{hq}"], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{enh}", "--lq", "{lq}", "--hq", "{hq}", "--max-steps", "0"], "steps")],
        "unparsable": NA("no option takes text"),
        "corrupt-file": [(["{enh}", "--lq", "{lq}", "--hq", "{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("enhance", "evaluate"): {
        "non-finite": [(["--lq", "{lq}", "--hq", "{hqnan}", "--model", "m={enh}"], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["--lq", "{lq}", "--hq", "{hq}", "--model", "m={enh}", "--steps", "0"], "steps")],
        "unparsable": NA("--model NAME=DIR: any text is a name"),
        "corrupt-file": [(["--lq", "{trunc}", "--hq", "{hq}", "--model", "m={enh}"], TRUNC)],
        "device": NO_DEVICE},
    ("segment", "train"): {
        "non-finite": [(["--image", "{nan}", "--labels", "{labels}", "-o", "{out.npz}"], NONFINITE)],
        "bad-labels": [(["--image", "{grey}", "--labels", "{greylab}", "-o", "{out.npz}"], "labels"),
                       (["--image", "{grey}", "--labels", "{neglab}", "-o", "{out.npz}"], "negative")],
        "out-of-range": [(["--image", "{grey}", "--labels", "{labels}", "-o", "{out.npz}", "--trees", "0"], "trees")],
        "unparsable": [(["--image", "{grey}", "--labels", "{labels}", "-o", "{out.npz}", "--sigmas", "a"],
                        "--sigmas")],
        "corrupt-file": [(["--image", "{trunc}", "--labels", "{labels}", "-o", "{out.npz}"], TRUNC)],
        "device": NO_DEVICE},
    ("segment", "apply"): {
        "non-finite": [(["{seg}", "{nan}", "{out.tif}"], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{seg}", "{grey}", "{out.tif}", "--slab-depth", "0"], "slab")],
        "unparsable": [(["{spectrum}", "{grey}", "{out.tif}"], "{spectrum}")],
        "corrupt-file": [(["{seg}", "{trunc}", "{out.tif}"], TRUNC)], "device": NO_DEVICE},
    ("segment", "particles"): {
        "non-finite": NA("takes labels: a grey image is the bad-labels class"),
        "bad-labels": [(["{mask255}", "{out.tif}", "--class", "3"], "255"), (["{greylab}", "{out.tif}"], "labels")],
        "out-of-range": [(["{labels}", "{out.tif}", "--min-volume-nm3", "-1"], "min_volume"),
                         (["{labels}", "{out.tif}", "--chunk-budget-mb", "0"], "--chunk-budget-mb")],
        "unparsable": NA("no option takes text"),
        "corrupt-file": [(["{trunc}", "{out.tif}"], TRUNC)], "device": NO_DEVICE},
    ("segment", "evaluate"): {
        "non-finite": NA("takes labels: a grey image is the bad-labels class"),
        "bad-labels": [(["{greylab}", "{labels}"], "labels"), (["{labels}", "{neglab}"], "negative")],
        "out-of-range": [(["{labels}", "{labels}", "--particles", "--iou-threshold", "2"], "iou")],
        "unparsable": [(["{labels}", "{labels}", "--map", "x"], "--map")],
        "corrupt-file": [(["{trunc}", "{labels}"], TRUNC)], "device": NO_DEVICE},
    ("quantify", "thickness"): {
        "non-finite": NA("takes labels: a grey image is the bad-labels class"),
        "bad-labels": [(["{mask255}"], "255"), (["{greylab}"], "labels")],
        "out-of-range": [(["{labels}", "--smooth", "-1"], "smooth"), (["{labels}", "--chunk-budget-mb", "0"],
                                                                       "--chunk-budget-mb")],
        "unparsable": [(["{labels}", "--voxel-size", "1,2"], "--voxel-size")],
        "corrupt-file": [(["{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("quantify", "phases"): {
        "non-finite": NA("takes labels: a grey image is the bad-labels class"),
        "bad-labels": [(["{mask255}"], "255"), (["{greylab}"], "labels"), (["{neglab}"], "negative")],
        "out-of-range": NA("no numeric option"),
        "unparsable": [(["{labels}", "--voxel-size", "x"], "--voxel-size")],
        "corrupt-file": [(["{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("quantify", "particles"): {
        "non-finite": NA("takes labels: a grey image is the bad-labels class"),
        "bad-labels": [(["{greylab}"], "labels"), (["{neglab}"], "negative")],
        "out-of-range": [(["{particles}", "--voxel-size", "0"], "voxel")],
        "unparsable": [(["{particles}", "-o", "{out.txt}"], ".csv or .parquet")],
        "corrupt-file": [(["{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("quantify", "track"): {
        "non-finite": NA("takes labels: a grey image is the bad-labels class"),
        "bad-labels": [(["{particles}", "{greylab}"], "labels")],
        "out-of-range": [(["{particles}", "{particles}", "--voxel-size", "-1"], "voxel")],
        "unparsable": [(["{particles}", "{particles}", "--field", "{spectrum}"], "{spectrum}")],
        "corrupt-file": [(["{particles}", "{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("quantify", "regions"): {
        "non-finite": NA("takes labels and fields"),
        "bad-labels": [(["--field", "{field}", "--labels", "{greylab}"], "labels")],
        "out-of-range": [(["--field", "{field}", "--labels", "{labels}", "--layers", "0"], "layers")],
        "unparsable": [(["--field", "{spectrum}", "--labels", "{labels}"], "{spectrum}")],
        "corrupt-file": [(["--field", "{field}", "--labels", "{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("quantify", "modes"): {
        "non-finite": [(["{particles}", "{nan}"], NONFINITE)],
        "bad-labels": [(["{greylab}", "{grey}"], "labels")],
        "out-of-range": [(["{particles}", "{grey}", "--threshold", "nan"], "threshold")],
        "unparsable": NA("no option takes text"),
        "corrupt-file": [(["{particles}", "{trunc}"], TRUNC)], "device": NO_DEVICE},
    ("neutron", "plan"): {
        "non-finite": NA("no input"), "bad-labels": NO_LABELS,
        "out-of-range": [(["--target-um", "-1"], "target"),
                         (["--target-um", "5", "--ld", "0", "--sample-detector-mm", "10"], "collimation")],
        "unparsable": NA("numbers only (click refuses text)"),
        "corrupt-file": NA("no input"), "device": NO_DEVICE},
    ("neutron", "normalize"): {
        "non-finite": [(["{nan}", "{grey}", "{out.tif}"], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{grey}", "{grey}", "{out.tif}", "--thickness-cm", "0"], "thickness")],
        "unparsable": [(["{grey}", "{grey}", "{out.tif}", "--background", "a"], "--background")],
        "corrupt-file": [(["{trunc}", "{grey}", "{out.tif}"], TRUNC)], "device": NO_DEVICE},
    ("neutron", "bragg"): {
        "non-finite": NO_IMAGE, "bad-labels": NO_LABELS,
        "out-of-range": [(["{spectrum}", "--window", "5,1"], "window")],
        "unparsable": [(["{spectrum}", "--window", "a"], "--window"), (["{grey}"], "{grey}")],
        "corrupt-file": NA("reads a text spectrum (unparsable covers it)"), "device": NO_DEVICE},
    ("neutron", "isotopes"): {
        "non-finite": NO_IMAGE, "bad-labels": NO_LABELS,
        "out-of-range": [(["{spectrum}", "--composition", "Li", "--density", "-1"], "density")],
        "unparsable": [(["{spectrum}", "--composition", "Xx2", "--density", "1"], "composition"),
                       (["{spectrum}", "--composition", "Li7La3Zr2O1(2", "--density", "1"], "composition")],
        "corrupt-file": NA("reads a text spectrum (unparsable covers it)"), "device": NO_DEVICE},
    ("run",): {
        "non-finite": NA("voxel values are read by the stages, which refuse NaN (check_finite); --check reads "
                         "headers only"),
        "bad-labels": NA("label values are checked (check_labels) by the quantify stage that reads them; --check "
                         "checks that each label volume opens and has its image's shape"),
        "out-of-range": [(["{exp_range}", "--check"], "dvc.node_spacing=1"),
                         (["{exp_soc}", "--check"], "state_of_charge[1]=1.5")],
        "unparsable": [(["{exp_unknown}", "--check"], "did you mean 'node_spacing'"),
                       (["{exp_syntax}", "--check"], "not valid YAML")],
        "corrupt-file": [(["{exp_trunc}", "--check"], TRUNC)],
        "device": [(["{exp_device}", "--check"], "backend='torch'")]},
    ("reconstruct",): {
        "non-finite": NA("non-finite or non-positive transmissions are clipped and counted (a warning, issue 22)"),
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{grey}", "{out.tif}", "--no-flats", "--ring-size", "4"], "ring_size"),
                         (["{grey}", "{out.tif}", "--no-flats", "--center", "99"], "center=99"),
                         (["{grey}", "{out.tif}", "--flats", "{small}", "--darks", "{small}"], "detector size"),
                         (["{grey}", "{out.tif}", "--no-flats", "--workers", "0"], "--workers"),
                         (["{grey}", "{out.tif}", "--no-flats", "--geometry", "cone"], "itk-rtk")],
        "unparsable": [(["{grey}", "{out.tif}", "--no-flats", "--rows", "a:b"], "--rows"),
                       (["{grey}", "{out.tif}", "--no-flats", "--angles", "{spectrum}"], "angle list"),
                       (["{grey}", "{out.tif}", "--no-flats", "--paganin", "170"], "--energy-kev"),
                       (["{grey}", "{out.tif}", "--no-flats", "--uint16", "0.1"], "--uint16")],
        "corrupt-file": [(["{trunc}", "{out.tif}", "--no-flats"], TRUNC)], "device": NO_DEVICE},
    ("report",): {
        "non-finite": NA("reads the saved tables of a run folder"), "bad-labels": NO_LABELS,
        "out-of-range": NA("no numeric option"),
        "unparsable": [(["{grey}"], "not a tomo4d run folder")],
        "corrupt-file": NA("a folder that is not a run folder is the unparsable class"), "device": NO_DEVICE},
    ("init",): {
        "non-finite": NA("reads headers only"), "bad-labels": NO_LABELS, "out-of-range": NA("no numeric option"),
        "unparsable": [(["{grey}", "-o", "{out.yaml}"], "is not a folder")],
        "corrupt-file": [(["{truncdir}", "-o", "{out.yaml}"], TRUNC)], "device": NO_DEVICE},
    ("neutron", "maps"): {
        "non-finite": [(["{nan}", "{out.npz}", "--open-beam", "{grey}", *TOF], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{grey}", "{out.npz}", "--open-beam", "{grey}", *TOF, "--bin", "0"], "bin"),
                         (["{grey}", "{out.npz}", "--open-beam", "{grey}", *TOF, "--li6", "2"], "li6")],
        "unparsable": [(["{grey}", "{out.npz}", "--open-beam", "{grey}", *TOF, "--bragg-window", "a"],
                        "--bragg-window"), (["{spectrum}", "{out.npz}", "--li6", "0.1"], "npz")],
        "corrupt-file": [(["{trunc}", "{out.npz}", "--open-beam", "{grey}", *TOF], TRUNC)], "device": NO_DEVICE},
    ("neutron", "bands"): {
        "non-finite": [(["{nan}", "{grey}", *BANDS], NONFINITE)],
        "bad-labels": NO_LABELS,
        "out-of-range": [(["{grey}", "{grey}", *BANDS, "--bands", "0"], "n_bands"),
                         (["{grey}", "{grey}", *BANDS, "--pixel-size", "-1"], "pixel_size")],
        "unparsable": [(["{grey}", "{grey}", *BANDS, "--angles", "a,b"], "--angles"),
                       (["{grey}", "{grey}", *BANDS, "--band-edges", "x"], "--band-edges")],
        "corrupt-file": [(["{trunc}", "{grey}", *BANDS], TRUNC)], "device": NO_DEVICE},
    ("neutron", "lithium"): {
        "non-finite": [(["{nan}", "{out.tif}"], NONFINITE)],
        "bad-labels": [(["{grey}", "{out.tif}", "--labels", "{greylab}"], "labels")],
        "out-of-range": [(["{grey}", "{out.tif}", "--li6", "2"], "li6"),
                         (["{grey}", "{out.tif}", "--wavelength", "0"], "wavelength")],
        "unparsable": [(["{grey}", "{out.tif}", "--labels", "{labels}", "--ref", "x"], "--ref")],
        "corrupt-file": [(["{trunc}", "{out.tif}"], TRUNC)], "device": NO_DEVICE},
}


def test_table_covers_every_command_and_class():
    assert set(TABLE) == set(leaf_commands(cli)), "add the new command's row to TABLE"
    for words, row in TABLE.items():
        assert set(row) == set(CLASSES), f"{' '.join(words)}: fill in every class of bad input"
        for cls, cell in row.items():
            assert isinstance(cell, NA) or (isinstance(cell, list) and cell), (words, cls)


CASES = [(words, cls, i) for words, row in TABLE.items() for cls, cell in row.items() if isinstance(cell, list)
         for i in range(len(cell))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The files behind the placeholders (a small phantom, a field, two trained models)."""
    from tomo4d.io import open_volume, save_volume
    from tomo4d.phantom import make_experiment

    d = tmp_path_factory.mktemp("bad")
    ph = make_experiment(shape=(24, 24, 24), n_steps=2, seed=0).save(d / "ph", fields="none")
    hq, lq = open_volume(ph / "hq.tif"), open_volume(ph / "lq.tif")
    labels = open_volume(ph / "truth" / "labels_hq_T0.tif").numpy()
    grey = hq.numpy().astype(np.float32)

    def with_nan(a, where):
        a = a.astype(np.float32)
        a[where] = np.nan
        return a

    made = {"grey": hq.with_data(grey), "nan": hq.with_data(with_nan(grey, (3, 4, slice(5, 9)))),
            "labels": hq.with_data(labels.astype(np.uint8)),
            "mask255": hq.with_data((labels > 2).astype(np.uint8) * 255), "greylab": hq.with_data(grey),
            "neglab": hq.with_data(labels.astype(np.int16) - 3),
            "particles": open_volume(ph / "truth" / "particles_hq_T0.tif"),
            "lq": lq, "hq": hq, "lqnan": lq.with_data(with_nan(lq.numpy(), (2, 3, 4))),
            "hqnan": hq.with_data(with_nan(hq.numpy(), (5, 6, 7))), "small": hq.with_data(grey[:, :20, :20])}
    paths = {k: str(save_volume(v, d / f"{k}.tif")) for k, v in made.items()}
    stack = save_volume(np.ones((16, 64, 64), np.uint16), d / "whole.tif")
    raw = stack.read_bytes()
    (d / "trunc.tif").write_bytes(raw[: len(raw) // 2])
    paths["trunc"] = str(d / "trunc.tif")
    (d / "truncdir").mkdir()
    (d / "truncdir" / "T0.tif").write_bytes(raw[: len(raw) // 2])
    paths["truncdir"] = str(d / "truncdir")
    good = f"inputs:\n  series: [{paths['grey']}, {paths['grey']}]\n  time_s: [0, 1]\n"
    for name, text in {"range": good + "dvc:\n  node_spacing: 1\n", "unknown": good + "dvc:\n  node_spacng: 4\n",
                       "syntax": good + "dvc: [\n", "device": good + "dvc:\n  backend: numba\n  device: cuda\n",
                       "soc": good + "  state_of_charge: [0, 1.5]\n",
                       "trunc": f"inputs:\n  series: [{paths['grey']}, {paths['trunc']}]\n  time_s: [0, 1]\n"}.items():
        (d / f"exp_{name}.yaml").write_text(text)
        paths[f"exp_{name}"] = str(d / f"exp_{name}.yaml")
    wl = np.linspace(1, 5, 200)
    np.savetxt(d / "spectrum.csv", np.column_stack([wl, np.exp(-0.1 * wl)]), delimiter=",",
               header="wavelength,trans", comments="")
    paths["spectrum"] = str(d / "spectrum.csv")
    assert main(["dvc", paths["grey"], paths["grey"], "-o", str(d / "field.h5"), "--node-spacing", "5", "--half-window", "4"]) == 0
    assert main(["segment", "train", "--image", paths["grey"], "--labels", paths["labels"], "-o",
                 str(d / "seg.npz"), "--trees", "4"]) == 0
    (d / "cfg.json").write_text('{"preset": "tiny", "steps": 3, "crop": 16}')
    assert main(["enhance", "train", "--lq", paths["lq"], "--hq", paths["hq"], "-o", str(d / "enh"),
                 "--config", str(d / "cfg.json"), "--no-register", "--device", "cpu"]) == 0
    return paths | {"field": str(d / "field.h5"), "seg": str(d / "seg.npz"), "enh": str(d / "enh")}


def _fill(args, data, tmp_path):
    out = []
    for a in args:
        a = re.sub(r"\{out\.([\w.]+)\}", lambda m: str(tmp_path / f"out.{m.group(1)}"), a)
        out.append(re.sub(r"\{(\w+)\}", lambda m: data[m.group(1)], a))
    return out


@pytest.mark.parametrize("words, cls, i", CASES, ids=lambda v: "-".join(v) if isinstance(v, tuple) else str(v))
def test_bad_input_is_refused_in_one_line(data, tmp_path, capsys, words, cls, i):
    args, fragment = TABLE[words][cls][i]
    capsys.readouterr()
    rc = main([*words, *_fill(args, data, tmp_path)])
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert rc == 2, (rc, cap.err[-2000:])
    assert len(err) == 1 and err[0].startswith("tomo4d: error:"), err
    assert _fill([fragment], data, tmp_path)[0].lower() in err[0].lower(), err[0]
    assert "np.float" not in err[0] and "np.int" not in err[0] and "array(" not in err[0], err[0]
    assert not list(tmp_path.iterdir()), "a refused command wrote something"
