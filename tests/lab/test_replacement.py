"""A pool's Auto Scaling group keeps its capacity on the lab: capacity.yml makes the group on
the run's baked image, the lab's EC2 API launches its instance, and the lab's keeper boots it
as a host (gpufleet.lab.instance_keeper). Under streaming load from the official client, the
host gets a spot interruption notice (`lab capacity-drill`'s steps): its agent drains it, the
instance is reclaimed at the end of the (compressed) notice, the group launches a
replacement, and the LB's membership service takes the replacement in. Then Ollama is killed
on the group's host for good: the LB marks it down, its membership service marks the
instance Unhealthy in the group past lb_membership_unhealthy_after (10 s in the lab), and the
group replaces it. Last, the pool gets a spot instance above its on-demand one and the lab
refuses spot: a notice on the spot host ends with on-demand standing in (the LBs' spot
fallback), and once spot is allowed again the stand-in is drained and given back. No
playbook runs after capacity.yml."""

import time

import pytest
from fleet import QWEN, target, wait_for
from labctl import ec2_client, on_host

from gpufleet.lab import capacity_drill as drill
from gpufleet.lab import lab as lab_life
from gpufleet.lab.load import Load
from gpufleet.lab.topology import LabPaths

pytestmark = pytest.mark.lab_after_scenarios


@pytest.fixture(scope="module")
def pool(lab, baked):
    """The pool chat as a group of one instance on the run's image, published as a bake in
    CI publishes it; the LB was put back by the launch tests."""
    assert baked["image"], "the bake kept no image"
    paths = LabPaths.from_environment()
    topology = lab_life.load(paths)
    drill.publish_and_keep_the_pool(paths, topology, baked["image"], QWEN)
    lb = next(h["address"] for h in lab["hosts"] if h["name"] == "lb-1")
    return {"paths": paths, "topology": topology, "lb": lb}


def serving(pool: dict) -> drill.GroupHost | None:
    return drill.serving_host(pool["paths"], pool["topology"], pool["lb"], QWEN)


def terminated(lab: dict, instance_id: str) -> bool:
    described = ec2_client(lab).describe_instances(InstanceIds=[instance_id])["Reservations"]
    return described[0]["Instances"][0]["State"]["Name"] == "terminated"


def test_a_spot_notice_ends_with_the_groups_replacement_serving_and_no_request_lost(lab, pool):
    first = drill.wait(lambda: serving(pool), "the group's first instance serving")
    figures = drill.spot_notice_drill(pool["paths"], pool["topology"], pool["lb"], QWEN)

    load = figures["load"]
    drain = f"drained at the LB {figures['notice_to_drain_s']} s after the notice"
    assert load["failed"] == 0 and load["truncated"] == 0, (drain, figures["problems"][:5])
    assert load["served"] >= 20, load
    assert figures["noticed"] == first.host and figures["replacement"] != first.host
    assert terminated(lab, first.instance_id)
    names = [h.name for h in lab_life.load(pool["paths"]).hosts]
    assert first.host not in names and figures["replacement"] in names, names
    print(
        f"spot notice on {first.host}, {drain}; {figures['replacement']} serving through the LB "
        f"{figures['notice_to_serving_s']} s after it (notice compressed to "
        f"{figures['notice_s']:.0f} s); {load}"
    )


def test_a_host_whose_ollama_stays_dead_is_replaced_losing_only_its_own_streams(lab, pool):
    dead = drill.wait(lambda: serving(pool), "the group's instance serving")
    with Load(target(pool), [QWEN], concurrency=20, tokens=40) as running:
        time.sleep(3)
        # Killed, and kept from coming back: systemd's restarts cannot run the binary.
        on_host(dead.host, "sudo chmod a-x /usr/bin/ollama && sudo systemctl kill -s KILL ollama")
        killed_by = time.monotonic()

        def replacement() -> drill.GroupHost | None:
            now = serving(pool)
            return now if now is not None and now.instance_id != dead.instance_id else None

        new = drill.wait(replacement, "the group's replacement serving")
        replacement_serving = time.monotonic() - killed_by
        before = drill.served_on(pool["paths"], pool["lb"], QWEN, new.address)
        wait_for(lambda: drill.served_on(pool["paths"], pool["lb"], QWEN, new.address) > before, 60)
    report = running.report

    # Only streams the dead host had begun answering are lost, at most its maxconn (4).
    failed = report.problems()
    assert all(o.verdict == "truncated" and o.started < killed_by for o in failed), failed[:5]
    assert len(failed) <= 4, failed[:5]
    assert report.summary()["served"] >= 20, report.summary()
    assert terminated(lab, dead.instance_id)
    print(
        f"Ollama dead on {dead.host} to {new.host} serving through the LB: "
        f"{replacement_serving:.1f} s (unhealthy after 10 s down); {report.summary()}"
    )


def test_spot_refused_is_stood_in_for_on_demand_and_given_back_drained(lab, baked, pool):
    drill.publish_and_keep_the_pool(pool["paths"], pool["topology"], baked["image"], QWEN, spot=1)
    figures = drill.spot_shortage_drill(pool["paths"], pool["topology"], pool["lb"], QWEN)

    load = figures["load"]
    assert load["failed"] == 0 and load["truncated"] == 0, figures["problems"][:5]
    assert load["served"] >= 20, load
    assert len(figures["stand_in"]) == 1 and figures["stand_in_kept"] == [], figures
    # Within a minute of the spot instance gone: the fallback's 10 s here, then a boot.
    assert figures["reclaimed_to_stand_in_serving_s"] < 60, figures
    assert (figures["desired"], figures["on_demand_base"]) == (2, 1), figures
    print(
        f"spot refused, {figures['noticed']} reclaimed: {figures['stand_in'][0]} on demand "
        f"serving {figures['reclaimed_to_stand_in_serving_s']} s later; spot allowed: given "
        f"back drained {figures['spot_allowed_to_given_back_s']} s later; {load}"
    )
