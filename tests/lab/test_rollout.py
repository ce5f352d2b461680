"""A new image rolled across the pool's Auto Scaling group on the lab, under 20 streams of the
official clients through the LB asking for the model the pool serves at this point of the run:
qwen2.5:7b, on the group's instances (on demand and spot) and on the launch tests' hosts
(spot). The lab's own GPU hosts, which served llama3.1:8b and the alias chat, were taken by
the molecule scenarios before the bake these tests need.

The group is the one the capacity tests kept (one instance on demand, one spot) on the run's
bake. A second image is made from it as a build from a source AMI makes one (`lab
derive-image`: a file added), published, and rolled: every instance of the group replaced,
launch before terminate, a canary first. Then an image whose Ollama cannot start (the patch
tests' drop-in, baked in) is published and rolled: the canary never serves, the rollout stops,
takes it back and puts the template back; the old hosts serve throughout. Publishing the good
image again and running the playbook once more is the rollback: nothing is left to do."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from fleet import QWEN, target
from labctl import REPO, ec2_client, ec2_instances, gpufleet

from gpufleet.lab import capacity_drill as drill
from gpufleet.lab import lab as lab_life
from gpufleet.lab.load import Load
from gpufleet.lab.topology import LabPaths

pytestmark = pytest.mark.lab_after_scenarios
BROKEN_OLLAMA = "/etc/systemd/system/ollama.service.d/zz-rollout-test-broken.conf"
DERIVED = re.compile(r"^lab derive-image: image (ami-[0-9a-f]+) ")
# The lab's replacements serve within 15 s of launch; the broken one is given 20. The lab
# group's grace period (30 s) may end while it is taken back: the LB membership service marks
# it Unhealthy then, and only the group's suspended ReplaceUnhealthy keeps another from being
# launched in its place.
BROKEN_SERVING_TIMEOUT = 20


@pytest.fixture(scope="module")
def pool(lab, baked):
    """The pool chat as the capacity tests left it (capacity.yml's last run there: one instance
    on demand and one spot, on the run's image), both instances serving. The rollout keeps the
    group as capacity.yml does, from the same pools."""
    assert baked["image"], "the bake kept no image"
    paths = LabPaths.from_environment()
    topology = lab_life.load(paths)
    drill.publish(topology, baked["image"])
    lb = next(h["address"] for h in lab["hosts"] if h["name"] == "lb-1")

    def both_serving() -> list[drill.GroupHost] | None:
        serving = drill.serving_hosts(paths, topology, lb, QWEN)
        return serving if len(serving) == 2 == len(drill.group_hosts(topology)) else None

    drill.wait(both_serving, "the group's two instances serving")
    return {"paths": paths, "topology": topology, "lb": lb, "image": baked["image"]}


def derived_image(source: str, *files: str) -> str:
    made = gpufleet("lab", "derive-image", source, *[a for f in files for a in ("--file", f)])
    return next(m.group(1) for line in made.stdout.splitlines() if (m := DERIVED.match(line)))


def group_images(lab: dict) -> dict[str, tuple[str, str]]:
    """The group's running instances: instance id -> (image, lifecycle)."""
    return {
        instance["InstanceId"]: (instance["ImageId"], instance.get("InstanceLifecycle", "od"))
        for instance, tags in ec2_instances(lab).values()
        if tags.get("aws:autoscaling:groupName") == drill.GROUP
        and instance["State"]["Name"] == "running"
    }


def rollout(lab: dict, pool: dict, *extra: str) -> dict:
    """ami_rollout.yml for the pool under 20 streams of the official clients; its exit
    status, output, report and what the clients saw."""
    # Room for three more: the scaler tests after these grow the pool without capacity.yml.
    pools = {"capacity_pools": drill.pools(pool["topology"], QWEN, spot=1, room=3)}
    playbook = ["ansible-playbook", "-i", lab["inventory"], "playbooks/ami_rollout.yml"]
    with Load(target(pool), [QWEN], concurrency=20, tokens=40) as running:
        result = subprocess.run(
            [*playbook, "-e", json.dumps(pools), *extra],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
            timeout=1200,
        )
    newest = max((REPO / "reports").glob("ami-rollout-*.json"), key=lambda p: p.stat().st_mtime)
    return {
        "rc": result.returncode,
        "output": result.stdout + result.stderr,
        "report": json.loads(newest.read_text()),
        "load": running.report.summary(),
        "problems": running.report.problems(),
    }


def recap_changed(output: str) -> dict[str, int]:
    recap = output[output.index("PLAY RECAP") :]
    return {
        line.split()[0]: int(line.split("changed=")[1].split()[0])
        for line in recap.splitlines()
        if "changed=" in line
    }


@pytest.fixture(scope="module")
def rolled(lab, pool):
    before = group_images(lab)
    image = derived_image(pool["image"], "/etc/gpufleet/image-release=rollout test\\n")
    drill.publish(pool["topology"], image)
    return {"before": before, "image": image, "run": rollout(lab, pool)}


def test_every_instance_is_replaced_from_the_new_image_without_a_failed_request(lab, rolled):
    run, image = rolled["run"], rolled["image"]
    assert run["rc"] == 0, run["output"][-4000:]
    assert run["load"]["failed"] == 0 and run["load"]["truncated"] == 0, run["problems"][:5]
    assert run["load"]["served"] >= 20, run["load"]
    after = group_images(lab)
    assert set(after).isdisjoint(rolled["before"]), (rolled["before"], after)
    assert {i for i, _lifecycle in after.values()} == {image}, after
    # Launched as what they replace: the on-demand base kept, spot above it.
    assert sorted(lc for _i, lc in after.values()) == sorted(
        lc for _i, lc in rolled["before"].values()
    )
    report = run["report"]
    assert report["outcome"] == "replaced" and report["replaced"] == 2, report
    assert report["requests"]["total"] == {"served": report["requests"]["total"]["served"]} | {
        "failed": 0,
        "truncated": 0,
    }, report["requests"]
    inventory = json.loads(
        subprocess.run(
            ["ansible-inventory", "-i", lab["inventory"], "--list"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    group_hosts = set(inventory[f"asg_{drill.GROUP.replace('-', '_')}"]["hosts"])
    assert len(group_hosts) == 2
    assert group_hosts.isdisjoint(inventory.get("ami_outdated", {}).get("hosts", [])), inventory
    rows = [
        (h["old_host"], h["new_host"], h["launch_to_serving_s"], h["drain_wait_s"])
        for h in report["hosts"]
    ]
    print(f"rolled onto {image} in {report['wall_s']} s: {rows}; clients: {run['load']}")


def test_a_second_run_has_nothing_to_do_and_changes_nothing(lab, pool, rolled):
    run = rollout(lab, pool)
    assert run["rc"] == 0, run["output"][-4000:]
    assert "nothing to do" in run["output"] and run["report"]["outcome"] == "nothing to do"
    assert set(recap_changed(run["output"]).values()) == {0}, run["output"][-2000:]


def test_an_image_whose_ollama_cannot_start_stops_at_the_canary_and_the_old_hosts_serve(
    lab, pool, rolled
):
    serving = group_images(lab)
    broken = derived_image(
        rolled["image"], f"{BROKEN_OLLAMA}=[Service]\\nExecStartPre=/bin/false\\n"
    )
    drill.publish(pool["topology"], broken)
    run = rollout(lab, pool, "-e", f"ami_rollout_serving_timeout={BROKEN_SERVING_TIMEOUT}")
    assert run["rc"] != 0, run["output"][-4000:]
    stopped = f"ami_rollout: stopped rolling {broken} onto gpu-"
    assert stopped in run["output"], run["output"][-3000:]
    assert 'at the step "Wait until every LB sees this host up"' in run["output"]
    assert "none left running" in run["output"], run["output"][-3000:]
    assert run["load"]["failed"] == 0 and run["load"]["truncated"] == 0, run["problems"][:5]
    assert group_images(lab) == serving
    (group,) = ec2_client(lab, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[drill.GROUP]
    )["AutoScalingGroups"]
    assert group["SuspendedProcesses"] == [] and group["DesiredCapacity"] == len(serving), group
    versions = ec2_client(lab).describe_launch_template_versions(LaunchTemplateName=drill.GROUP)[
        "LaunchTemplateVersions"
    ]
    latest = max(versions, key=lambda v: v["VersionNumber"])
    assert latest["LaunchTemplateData"]["ImageId"] == rolled["image"], latest
    assert run["report"]["outcome"] == "stopped" and run["report"]["replaced"] == 0

    # The rollback: the good image published again, the same playbook. Nothing is left to
    # replace; the template is written once more, as the put-back version says the rollout
    # stopped in its description.
    drill.publish(pool["topology"], rolled["image"])
    again = rollout(lab, pool)
    assert again["rc"] == 0, again["output"][-3000:]
    assert again["report"]["outcome"] == "nothing to do", again["report"]
    print(f"{broken} stopped at the canary: {run['report']['stopped']}; clients: {run['load']}")
