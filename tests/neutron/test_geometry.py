"""Resolution planner: the two formulas, which constraint binds, and bad geometry."""

import math

import pytest

from tomo4d import InputError
from tomo4d.neutron import NeutronSetup, XraySetup, neutron_resolution_um, plan_resolution, xray_resolution_um


@pytest.mark.parametrize("l_mm,ld,det,expected", [(20, 500, 0, 40.0), (10, 1000, 0, 10.0), (10, 1000, 10, 10 * 2 ** 0.5)])
def test_neutron_resolution(l_mm, ld, det, expected):
    assert neutron_resolution_um(sample_detector_distance_mm=l_mm, collimation_ratio=ld,
                                 detector_resolution_um=det) == pytest.approx(expected)


@pytest.mark.parametrize("pixel,so,sd,spot,expected", [(25, 20, 100, 0, 5.0), (50, 50, 100, 0, 25.0),
                                                       (10, 10, 100, 5, math.hypot(1.0, 4.5))])
def test_xray_resolution(pixel, so, sd, spot, expected):
    assert xray_resolution_um(detector_pixel_um=pixel, source_sample_distance_mm=so, source_detector_distance_mm=sd,
                              source_spot_um=spot) == pytest.approx(expected)


def test_issue_example_5um_at_m5_needs_pixel_under_25um():
    plan = plan_resolution(5.0, xray=XraySetup(detector_pixel_um=50, source_sample_distance_mm=20,
                                               source_detector_distance_mm=100, min_source_sample_distance_mm=20))
    x = plan.xray
    assert x.magnification == pytest.approx(5.0)
    assert x.max_detector_pixel_um == pytest.approx(25.0)
    assert not x.reachable and x.binding_constraint == "detector pixel"
    assert x.current_resolution_um == pytest.approx(10.0)
    ok = plan_resolution(5.0, xray=XraySetup(detector_pixel_um=24, source_sample_distance_mm=20,
                                             source_detector_distance_mm=100, min_source_sample_distance_mm=20))
    assert ok.xray.reachable and ok.xray.current_resolution_um < 5.0


def test_xray_sample_closer_to_the_source():
    plan = plan_resolution(2.0, xray=XraySetup(detector_pixel_um=20, source_sample_distance_mm=50,
                                               source_detector_distance_mm=500, min_source_sample_distance_mm=10))
    x = plan.xray
    assert x.reachable and x.binding_constraint == "source-sample distance"
    assert x.required_magnification == pytest.approx(10.0)
    assert x.max_source_sample_distance_mm == pytest.approx(50.0)
    assert x.best_resolution_um == pytest.approx(0.4)


def test_xray_spot_limited():
    plan = plan_resolution(1.0, xray=XraySetup(detector_pixel_um=10, source_sample_distance_mm=10,
                                               source_detector_distance_mm=1000, min_source_sample_distance_mm=1,
                                               source_spot_um=5))
    assert not plan.xray.reachable and plan.xray.binding_constraint == "source spot"
    # best resolution at the optimal magnification M = 1 + (P / s)^2 = 5
    assert plan.xray.best_resolution_um == pytest.approx(xray_resolution_um(
        detector_pixel_um=10, source_sample_distance_mm=200, source_detector_distance_mm=1000, source_spot_um=5))


def test_neutron_sample_close_to_detector_and_collimation():
    near = plan_resolution(50.0, neutron=NeutronSetup(collimation_ratio=500, sample_detector_distance_mm=40,
                                                      min_sample_detector_distance_mm=10))
    n = near.neutron
    assert n.reachable and n.binding_constraint == "sample-detector distance"
    assert n.max_sample_detector_distance_mm == pytest.approx(25.0)
    assert n.current_resolution_um == pytest.approx(80.0) and n.best_resolution_um == pytest.approx(20.0)
    far = plan_resolution(10.0, neutron=NeutronSetup(collimation_ratio=500, sample_detector_distance_mm=20,
                                                     min_sample_detector_distance_mm=10))
    assert not far.neutron.reachable and far.neutron.binding_constraint == "collimation ratio"
    assert far.neutron.min_collimation_ratio == pytest.approx(1000.0)
    det = plan_resolution(10.0, neutron=NeutronSetup(collimation_ratio=500, sample_detector_distance_mm=5,
                                                     detector_resolution_um=12))
    assert det.neutron.binding_constraint == "detector resolution" and not det.neutron.reachable
    rows = det.table_rows()
    assert len(rows) == 1 and rows[0][0] == "neutron" and len(rows[0]) == len(det.header())


@pytest.mark.parametrize("make", [
    lambda: NeutronSetup(collimation_ratio=0, sample_detector_distance_mm=10),
    lambda: NeutronSetup(collimation_ratio=100, sample_detector_distance_mm=5, min_sample_detector_distance_mm=10),
    lambda: XraySetup(detector_pixel_um=10, source_sample_distance_mm=200, source_detector_distance_mm=100),
    lambda: plan_resolution(5.0),
    lambda: plan_resolution(-1.0, xray=XraySetup(detector_pixel_um=10, source_sample_distance_mm=20,
                                                 source_detector_distance_mm=100)),
])
def test_bad_geometry(make):
    with pytest.raises(InputError):
        make()


def test_beamline_presets_and_spot_binding_at_the_largest_magnification():
    from tomo4d.errors import InputError
    from tomo4d.neutron import beamline_setup

    n, x = beamline_setup("NeXT")
    assert isinstance(n, NeutronSetup) and isinstance(x, XraySetup)
    assert beamline_setup("odin")[1] is None
    with pytest.raises(InputError, match="next, odin"):
        beamline_setup("sans2d")
    # 127 um pixel, 5 um spot, M at most 60: the penumbra (4.9 um) outweighs the pixel (2.1 um)
    plan = plan_resolution(5.0, xray=x)
    assert not plan.xray.reachable and plan.xray.binding_constraint == "source spot"
