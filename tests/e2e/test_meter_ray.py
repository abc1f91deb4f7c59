"""One energy meter per node, on a real local Ray: two workers on a node share one meter, a
meter that cannot start does not stop the others, training metrics reach Ray's metrics."""

from __future__ import annotations

import time

from orchestrator.energy.meter import start_node_meters


def test_two_workers_on_one_node_get_one_meter(ray_local, tmp_path):
    import ray

    node = ray.get_runtime_context().get_node_id()
    group = start_node_meters("run-meter", str(tmp_path), [node, node], interval_s=0.5,
                              gpu_uuids_by_node={node: []})
    try:
        assert list(group.actors) == [node]
        (actor,) = group.actors.values()
        assert ray.get(actor.node_id.remote()) == node
        time.sleep(1.5)
        rows = group.poll()
    finally:
        rows_end = group.stop()
    rows += rows_end
    st = group.status()
    assert list(st["nodes"]) == [node] and st["errors"] == []
    assert st["nodes"][node]["cpu"] in ("estimate", "rapl")
    assert {r["node"] for r in rows} == {node} and {r["device"] for r in rows} == {"cpu", "ram"}
    for device in ("cpu", "ram"):  # one meter's windows: one per time, none overlapping
        times = [r["time"] for r in rows if r["device"] == device]
        assert times == sorted(times) and len(set(times)) == len(times)
    assert group.poll() == []  # stopped and released


def test_a_meter_that_cannot_start_does_not_stop_the_others(ray_local, tmp_path):
    import ray

    node, gone = ray.get_runtime_context().get_node_id(), "ab" * 28  # a node that is not there
    group = start_node_meters("run-gone", str(tmp_path), [node, gone], interval_s=0.5,
                              gpu_uuids_by_node={node: []}, cpu=False, timeout_s=20)
    try:
        assert list(group.actors) == [node]
        st = group.status()
        assert list(st["nodes"]) == [node] and any(gone in e for e in st["errors"]), st
    finally:
        group.stop()


def test_training_metrics_reach_ray(ray_local):
    from orchestrator.energy.meter import report_training_metrics

    assert report_training_metrics(2.5, 1234.0, 0.41, "run-x") is True
