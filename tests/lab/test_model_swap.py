"""The rolling model swap on the lab's shared fleet, under streaming load through the LB.

The lab's pool `chat` starts on two models; the proofs start from one (every host on
llama3.1:8b, itself a swap that leaves hosts already on it alone). Then: refusals before any
host is touched; a canary that cannot get its model (the lab registry serves gemma2:9b with
a corrupt blob) leaves the whole fleet on the old model with no request dropped; and the
whole pool moves to mistral:7b with no request dropped. This module leaves the fleet on
mistral:7b, so it runs after the LB tests.
"""

from __future__ import annotations

import json

import pytest
from fleet import FLAG, LLAMA, lb_vars, playbook, servers, target
from labctl import REPO, ec2_instances, on_host

from gpufleet.lab.load import Load, stream_once

POOL = "chat"
MISTRAL, BROKEN = "mistral:7b", "gemma2:9b"
MISTRAL_BACKEND = "be_model_mistral_7b"
GPU_HOSTS = ("gpu-1", "gpu-2", "gpu-3")
REPORTS = REPO / "reports"


def swap(fleet: dict, model: str, *extra: str, check: bool = True) -> str:
    return playbook(
        fleet["lab"],
        "model_swap.yml",
        *lb_vars("-e", f"model_swap_pool={POOL}", "-e", f"model_swap_model={model}", *extra),
        check=check,
    )


def tagged_models(fleet: dict) -> dict[str, str]:
    """Each GPU host's gpufleet:model tag, as the lab's EC2 API has it now."""
    described = ec2_instances(fleet["lab"])
    return {h: described[h][1].get("gpufleet:model", "") for h in GPU_HOSTS}


def models_on(fleet: dict, host: str) -> set[str]:
    """The models on the host's Ollama (bound to its private address), by `ollama list`."""
    listing = on_host(host, f"OLLAMA_HOST={fleet['hosts'][host]}:11434 ollama list")
    return {line.split()[0] for line in listing.splitlines()[1:] if line.strip()}


def newest_report() -> dict:
    return json.loads(
        max(REPORTS.glob("model-swap-*.json"), key=lambda p: p.stat().st_mtime).read_text()
    )


def changed_hosts(output: str) -> list[str]:
    """PLAY RECAP lines of lab hosts (not the controller) that report a change."""
    recap = output[output.index("PLAY RECAP") :].splitlines()[1:]
    lab_hosts = (*GPU_HOSTS, "lb-1")
    return [
        line
        for line in recap
        if line.split(":")[0].strip() in lab_hosts and "changed=0" not in line
    ]


@pytest.fixture(scope="module")
def one_model_pool(fleet: dict) -> dict:
    output = swap(fleet, LLAMA)
    assert tagged_models(fleet) == dict.fromkeys(GPU_HOSTS, LLAMA)
    report = newest_report()
    outcomes = {row["host"]: row["outcome"] for row in report["hosts"]}
    assert outcomes == {"gpu-1": "unchanged", "gpu-2": "unchanged", "gpu-3": "swapped"}, output
    return fleet


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["-e", "model_swap_pool=batch"], "model_swap_pool must name a pool of GPU hosts"),
        (
            ["-e", '{"model_swap_model": "Llama 3"}'],
            'model_swap_model a model as name:tag (got "Llama 3")',
        ),
        (["-e", "model_swap_model=nosuch:1b"], "nosuch:1b is not in the registry"),
        (["-e", "model_swap_vram_margin=100000"], "too little on gpu-1, gpu-2, gpu-3"),
        (["-e", "model_swap_min_healthy=3"], "would leave fewer than model_swap_min_healthy (3)"),
    ],
)
def test_a_swap_that_cannot_work_is_refused_before_any_host_is_touched(
    one_model_pool, extra, named
):
    output = swap(one_model_pool, MISTRAL, *extra, check=False)
    assert not output.startswith("rc=0"), output[-2000:]
    assert named in output, output[-2000:]
    assert "No host was touched" in output
    assert tagged_models(one_model_pool) == dict.fromkeys(GPU_HOSTS, LLAMA)
    for host in GPU_HOSTS:
        assert on_host(host, f"test -e {FLAG} && echo drained || echo serving").strip() == "serving"
        assert MISTRAL not in models_on(one_model_pool, host)


def test_a_canary_that_cannot_get_the_model_leaves_the_fleet_serving_the_old_one(one_model_pool):
    load = Load(target(one_model_pool), [LLAMA], concurrency=20, tokens=40).start()
    output = swap(one_model_pool, BROKEN, check=False)
    outcome = load.stop()
    assert not output.startswith("rc=0"), output[-3000:]
    assert f'failed at "Pull {BROKEN}"' in output and "no further host is touched" in output
    assert outcome.summary()["failed"] == 0 and outcome.summary()["truncated"] == 0, (
        outcome.problems()[:5]
    )
    assert outcome.summary()["served"] >= 20
    assert tagged_models(one_model_pool) == dict.fromkeys(GPU_HOSTS, LLAMA)
    assert all(BROKEN not in models_on(one_model_pool, host) for host in GPU_HOSTS)
    report = newest_report()
    assert report["outcome"] == "rolled back"
    assert [row["outcome"] for row in report["hosts"]] == ["rolled back"]
    assert (
        report["requests"]["total"]["failed"] == 0 and report["requests"]["total"]["truncated"] == 0
    )


def test_the_pool_moves_to_the_new_model_under_load_without_a_dropped_request(one_model_pool):
    fleet = one_model_pool
    load = Load(target(fleet), [LLAMA], concurrency=20, tokens=40).start()
    swap(fleet, MISTRAL)
    outcome = load.stop()
    summary = outcome.summary()
    assert summary["failed"] == 0 and summary["truncated"] == 0, outcome.problems()[:5]
    assert summary["served"] >= 20
    kinds = {o.kind for o in outcome.outcomes}
    assert kinds == {"generate", "chat", "openai-chat", "embed"}

    assert tagged_models(fleet) == dict.fromkeys(GPU_HOSTS, MISTRAL)
    report = newest_report()
    assert report["outcome"] == "swapped" and report["requests"]["total"]["failed"] == 0
    assert (
        report["requests"]["total"]["truncated"] == 0 and report["requests"]["total"]["served"] > 0
    )
    for row in report["hosts"]:
        assert (row["from"], row["to"], row["outcome"]) == (LLAMA, MISTRAL, "swapped"), row
        assert 0 <= row["drain_wait_s"] <= row["total_s"]

    # Requests for the new model spread over every host of its backend; the old model, kept
    # on disk, is served from the default backend.
    before = servers()
    for number in range(9):
        assert stream_once(target(fleet), "generate", MISTRAL, 1, number).verdict == "served"
    assert stream_once(target(fleet), "chat", LLAMA, 1, 0).verdict == "served"
    after = servers()
    gained = {
        h: int(after[(MISTRAL_BACKEND, h)]["stot"]) - int(before[(MISTRAL_BACKEND, h)]["stot"])
        for h in GPU_HOSTS
    }
    assert all(count > 0 for count in gained.values()), gained
    assert not any(key[0].startswith("be_model_llama") for key in after), (
        "the old model's backend stays"
    )


def test_a_second_swap_to_the_same_model_changes_no_host(one_model_pool):
    output = swap(one_model_pool, MISTRAL)
    assert "lb-1" in output and not changed_hosts(output), changed_hosts(output)
