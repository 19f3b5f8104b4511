import json

import numpy as np
import pytest

from tomo4d.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory, phantom_case):
    from tomo4d import Volume
    from tomo4d.io import save_volume

    d = tmp_path_factory.mktemp("q")
    vs = (phantom_case.vs,) * 3
    out = {"labels": [], "particles": [], "fields": [], "changes": []}
    for s in (0, 2):
        p = d / f"labels_T{s}.tif"
        save_volume(Volume(phantom_case.labels[s], vs), p)
        out["labels"].append(str(p))
        p = d / f"particles_T{s}.tif"
        save_volume(Volume(phantom_case.particles[s].astype(np.uint16), vs), p)
        out["particles"].append(str(p))
        p = d / f"change_T{s}.tif"
        save_volume(Volume(phantom_case.changes[s].astype(np.float32), vs), p)
        out["changes"].append(str(p))
    p = d / "field_T2.h5"
    phantom_case.fields[2].save(p)
    out["fields"].append(str(p))
    out["dir"] = d
    return out


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_thickness_and_phases(files, capsys, phantom_case):
    assert main(["quantify", "thickness", *files["labels"], "--json"]) == 0
    d = _json(capsys)["thickness"]
    truth = phantom_case.truth.thickness_nm
    assert abs(d["thickness_mean_um"][1] * 1e3 - truth[2]) < phantom_case.vs
    out = files["dir"] / "phases.parquet"
    assert main(["quantify", "phases", *files["labels"], "-o", str(out), "--json"]) == 0
    d = _json(capsys)
    assert d["phases"]["rnl"][0] == 1.0 and d["output"] == str(out) and out.is_file()
    assert main(["quantify", "phases", *files["labels"]]) == 0
    assert "RNL" in capsys.readouterr().out


def test_particles_track_regions_modes(files, capsys):
    out = files["dir"] / "particles.csv"
    assert main(["quantify", "particles", files["particles"][0], "--cracks", "-o", str(out), "--json"]) == 0
    d = _json(capsys)
    assert d["particles"]["n_particles"] > 30 and d["n_cracked"] >= 1
    assert out.read_text().splitlines()[0].startswith("label,n_voxels,volume_um3")
    assert main(["quantify", "track", *files["particles"], "--field", files["fields"][0], "--json"]) == 0
    d = _json(capsys)["tracks"]
    assert d["n_complete"] >= 0.9 * d["n_started_at_first_step"]
    assert main(["quantify", "regions", "--field", files["fields"][0], "--labels", files["labels"][0], "--json"]) == 0
    d = _json(capsys)["regions"]
    zz = [m for m, c in zip(d["strain_mean"], d["component"]) if c == "hencky_zz"]
    assert zz[1] > zz[0]  # separator side above collector side
    assert main(["quantify", "modes", files["particles"][0], *files["changes"], "--threshold", "0.5",
                 "--method", "threshold"]) == 0
    assert "core-shell" in capsys.readouterr().out


@pytest.mark.parametrize("args, msg", [
    (["quantify", "thickness", "/nonexistent.tif"], "does not exist"),
    (["quantify", "particles", "{p}", "-o", "{p}.txt"], ".csv or .parquet"),
    (["quantify", "particles", "{p}", "-o", "{p}"], "would overwrite the input"),
    (["quantify", "phases", "{p}", "--voxel-size", "1,2"], "--voxel-size"),
])
def test_user_errors_are_one_line(files, capsys, args, msg):
    args = [a.replace("{p}", files["labels"][0]) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tomo4d: error:") and msg in err[0]


def test_phase_commands_relabel_with_map(tmp_path, capsys):
    """The refusal of a {0, 255} mask names --map; with it the mask is counted as the phase it maps to."""
    import tifffile

    mask = np.zeros((8, 16, 16), np.uint8)
    mask[:, :, :4] = 255  # a quarter of the voxels
    p = tmp_path / "mask.tif"
    tifffile.imwrite(p, mask)
    assert main(["quantify", "phases", str(p), "--voxel-size", "50"]) == 2
    assert "--map 255:2" in capsys.readouterr().err
    assert main(["quantify", "phases", str(p), "--voxel-size", "50", "--map", "255:2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["phases"]
    assert d["silicon_fraction"] == [pytest.approx(0.25)]
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, mask.astype(np.float32) + 0.5)
    assert main(["quantify", "phases", str(grey), "--voxel-size", "50", "--map", "255:2"]) == 2  # never truncated


def _run_json(capsys, args):
    assert main(args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


#: per command: the in-memory function a streamed run must not call
_WHOLE = {"thickness": "tomo4d.quantify.thickness.electrode_thickness", "regions": "tomo4d.quantify.thickness.electrode_thickness",
          "phases": "tomo4d.quantify.phases.phase_volumes", "particles": "tomo4d.quantify.particle_properties",
          "modes": "tomo4d.quantify.lithiation_modes", "cracks": "tomo4d.quantify.detect_cracks"}


@pytest.mark.parametrize("cmd", ["thickness", "phases", "particles", "cracks", "track", "regions", "modes"])
def test_commands_stream_over_the_budget_with_the_same_results(files, capsys, cmd, monkeypatch):
    """--chunk-budget-mb below a step's working set: the volumes are read slab by slab (the in-memory route is
    never taken) and the results equal the in-memory run's."""
    import tomo4d.quantify
    from tomo4d._array import is_lazy

    args = {"thickness": ["quantify", "thickness", *files["labels"]],
            "phases": ["quantify", "phases", *files["labels"], "--region", "electrode"],
            "particles": ["quantify", "particles", files["particles"][0]],
            "cracks": ["quantify", "particles", files["particles"][0], "--cracks"],
            "track": ["quantify", "track", *files["particles"], "--field", files["fields"][0]],
            "regions": ["quantify", "regions", "--field", files["fields"][0], "--labels", files["labels"][0]],
            "modes": ["quantify", "modes", files["particles"][0], *files["changes"], "--threshold", "0.5",
                      "--method", "threshold"]}[cmd]
    whole = _run_json(capsys, args + ["--json"])

    def refuse(*a, **k):
        raise AssertionError("the in-memory route was taken")

    if cmd in _WHOLE:
        monkeypatch.setattr(_WHOLE[cmd], refuse)
    else:
        track = tomo4d.quantify.track_particles

        def lazy_only(series, **kw):
            assert all(is_lazy(a) for a in series) and kw["chunk_budget_mb"] == 2.0
            return track(series, **kw)

        monkeypatch.setattr(tomo4d.quantify, "track_particles", lazy_only)
    streamed = _run_json(capsys, args + ["--json", "--chunk-budget-mb", "2"])
    assert streamed == whole


def test_relabel_is_lazy_and_equals_the_in_memory_map():
    import dask.array as da

    from tomo4d.cli._util import relabel

    a = np.random.default_rng(0).choice([0, 1, 255], size=(6, 8, 8)).astype(np.uint8)
    lazy = relabel(da.from_array(a, chunks=(2, 8, 8)), "255:2,0:7")
    assert isinstance(lazy, da.Array) and lazy.dtype == np.uint8
    np.testing.assert_array_equal(lazy.compute(), relabel(a, "255:2,0:7"))


def test_budget_is_checked(files, capsys):
    assert main(["quantify", "thickness", files["labels"][0], "--chunk-budget-mb", "0"]) == 2
    assert "--chunk-budget-mb" in capsys.readouterr().err
