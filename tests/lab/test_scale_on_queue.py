"""The scaler on the lab, as `gpufleet lab scaler-drill` runs it, on the pool chat as the rollout
tests left it (one instance on demand and one spot, min 2, room for three more, on the run's
image), with the official clients' load through the LB asking for the pool's model
(qwen2.5:7b at this point of the run, which the launch tests' hosts serve too).

The spike is ten times a steady load sized on what serves the model, so its queue is above
the lab's threshold (4) by 1 to 10: for the lab's window (10 s) the scaler sees it, adds one to
three hosts, they serve, and the queue falls back. Then 3 long streams and no queue: after the
lab's quiet window (15 s) the scaler tags the oldest spot instance to drain; once its agent has
drained it at the LB, the scaler is killed and systemd restarts it; that one instance is
terminated, no other, and none is left drained. Every request is counted: none failed, none
cut."""

from __future__ import annotations

import pytest
from fleet import QWEN

from gpufleet.lab import lab as lab_life
from gpufleet.lab import scaler_drill
from gpufleet.lab.topology import LabPaths

pytestmark = pytest.mark.lab_after_scenarios


def test_the_pool_grows_on_a_spike_and_shrinks_through_a_drain_that_survives_a_kill(lab, baked):
    assert baked["image"], "the bake kept no image"
    paths = LabPaths.from_environment()
    topology = lab_life.load(paths)
    lb = next(h["address"] for h in lab["hosts"] if h["name"] == "lb-1")
    figures = scaler_drill.scaler_drill(paths, topology, lb, QWEN)

    grown, shrunk = figures["spike"], figures["scale_in"]
    for phase in (grown, shrunk):
        assert phase["load"]["failed"] == 0 and phase["load"]["truncated"] == 0, phase["problems"]
        assert phase["load"]["served"] > 0, phase["load"]
    assert grown["streams"][1] == 10 * grown["streams"][0]
    before, after = grown["desired"]
    assert after > before, grown
    events = grown["events_s"]
    assert events["queue_above_threshold"] <= events["scaled_out"], events
    assert events["scaled_out"] <= events["added_serving"] <= events["queue_back_under"], events
    # The scaler saw a whole window above the threshold before it acted.
    assert events["scaled_out"] - events["queue_above_threshold"] >= 10 - 2, events

    assert shrunk["removed"] == [shrunk["leaving"]] and shrunk["left_tagged"] == [], shrunk
    assert shrunk["lifecycle"] == "spot", shrunk
    assert shrunk["desired"] == [after, after - 1] and after - 1 >= shrunk["min"], shrunk
    assert shrunk["restarts"] == "1", shrunk
    decisions = figures["decisions"]
    assert any("decision=out+" in line for line in decisions), decisions
    assert sum("drained on every LB" in line for line in decisions) == 1, decisions
