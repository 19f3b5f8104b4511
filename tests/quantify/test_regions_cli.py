"""``tomo4d quantify regions``: finite strain per electrode half by default, small strain on request."""

import json

from tomo4d.cli import main


def test_regions_cli_finite_by_default(tmp_path, phantom_case, capsys):
    from tomo4d import Volume
    from tomo4d.io import save_volume

    lab = tmp_path / "labels_T0.tif"
    save_volume(Volume(phantom_case.labels[0], (phantom_case.vs,) * 3), lab)
    field = tmp_path / "field_T2.h5"
    phantom_case.fields[2].save(field)
    assert main(["quantify", "regions", "--field", str(field), "--labels", str(lab), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["regions"]
    assert set(d["component"]) == {"hencky_zz", "volumetric"}
    m = {(r, c): v for r, c, v in zip(d["region"], d["component"], d["strain_mean"])}
    truth = phantom_case.truth.anode_finite_strain()
    assert m["separator side", "hencky_zz"] > m["collector side", "hencky_zz"]
    assert abs(m["collector side", "hencky_zz"] - truth.hencky_zz[2, 0]) < 0.01
    assert abs(m["collector side", "volumetric"] - truth.volumetric[2, 0]) < 0.01
    out = tmp_path / "regions.csv"
    assert main(["quantify", "regions", "--field", str(field), "--labels", str(lab), "--layers", "4",
                 "--small-strain", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "small_zz" in text and "layer 4/4 (separator)" in text
    header = out.read_text().splitlines()[0]
    assert header.startswith("step,region,component,n_nodes,strain_mean")
    assert main(["quantify", "regions", "--field", str(field), "--labels", str(lab), "-c", "bogus"]) == 2
