"""The rolling model swap on the lab's default mixed pool, under load from the official clients.

The pool `chat` is as the lab makes it: gpu-1 and gpu-2 on llama3.1:8b, gpu-3 on qwen2.5:7b,
and the pool's alias `chat` on every host. Refusals come before any host is touched; a canary
that cannot get its model (the lab registry serves gemma2:9b with a corrupt blob) leaves the
fleet as it was; the whole pool moves to mistral:7b while clients stream on the alias, on the
old names and on the new one, and each sees what the swap promises. This module leaves the
fleet on mistral:7b, so it runs after the LB tests.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime

import pytest
from fleet import FLAG, LLAMA, QWEN, lb_vars, playbook, servers, target
from labctl import REPO, ec2_instances, on_host

from gpufleet.lab.load import Load, Outcome, stream_once

POOL, ALIAS = "chat", "chat"
MISTRAL, BROKEN = "mistral:7b", "gemma2:9b"
MISTRAL_BACKEND = "be_model_mistral:7b"
GPU_HOSTS = ("gpu-1", "gpu-2", "gpu-3")
MIXED = {"gpu-1": LLAMA, "gpu-2": LLAMA, "gpu-3": QWEN}
REPORTS = REPO / "reports"
NOT_SERVED = "is not served by this fleet"


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


def wall(monotonic: float) -> float:
    """A load outcome's monotonic time as wall-clock seconds, to compare with the report."""
    return monotonic + (time.time() - time.monotonic())


def at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.verdict != "served"]


def backend_totals() -> int:
    return sum(int(row["stot"]) for row in servers().values())


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["-e", "model_swap_pool=batch"], "model_swap_pool must name a pool of GPU hosts"),
        (["-e", '{"model_swap_model": "Llama 3"}'], "model_swap_model a model as name:tag"),
        (["-e", "model_swap_model=nosuch:1b"], "nosuch:1b is not in the registry"),
        (["-e", "model_swap_vram_margin=100000"], "too little on gpu-1, gpu-2, gpu-3"),
        (["-e", "model_swap_min_healthy=3"], "would leave fewer than model_swap_min_healthy (3)"),
        # Ansible reads serial 0 as every host in one batch: no canary, no host left serving.
        (["-e", '{"model_swap_serial": 0}'], "model_swap_serial 0 makes the batches gpu-"),
        (["-e", '{"model_swap_serial": "1, 0"}'], "is not a number of hosts or a percentage"),
        (["-e", f"fleet_pool_alias={QWEN}"], f"pool chat's alias '{QWEN}' is also the name"),
        (["-e", '{"fleet_pool_alias": "Chat Bot"}'], "pool chat's alias 'Chat Bot' is not an"),
    ],
)
def test_a_swap_that_cannot_work_is_refused_before_any_host_is_touched(fleet, extra, named):
    output = swap(fleet, MISTRAL, *extra, check=False)
    assert not output.startswith("rc=0"), output[-2000:]
    assert named in output, output[-2000:]
    assert "No host was touched" in output or "No host of this batch" in output, output[-2000:]
    assert tagged_models(fleet) == MIXED
    for host in GPU_HOSTS:
        assert on_host(host, f"test -e {FLAG} && echo drained || echo serving").strip() == "serving"
        assert MISTRAL not in models_on(fleet, host)


def test_a_canary_that_cannot_get_the_model_leaves_the_mixed_pool_as_it_was(fleet):
    load = Load(target(fleet), [ALIAS, LLAMA, QWEN], concurrency=16, tokens=40).start()
    output = swap(fleet, BROKEN, check=False)
    outcome = load.stop()
    assert not output.startswith("rc=0"), output[-3000:]
    assert f'failed at "Pull the new model while the host still serves: {BROKEN}"' in output
    assert "no further host is touched" in output
    assert not failures(outcome.outcomes), failures(outcome.outcomes)[:5]
    assert {o.model for o in outcome.outcomes} == {ALIAS, LLAMA, QWEN}
    assert tagged_models(fleet) == MIXED
    assert all(BROKEN not in models_on(fleet, host) for host in GPU_HOSTS)
    report = newest_report()
    assert report["outcome"] == "rolled back" and report["retired"] == {}
    assert [row["outcome"] for row in report["hosts"]] == ["rolled back"]
    assert report["requests"]["total"]["failed"] == 0, report["requests"]
    assert report["requests"]["per_name"][ALIAS]["failed"] == 0


def test_the_mixed_pool_moves_to_the_new_model_and_each_name_keeps_its_promise(fleet):
    alias = Load(target(fleet), [ALIAS], concurrency=10, tokens=40).start()
    old = Load(target(fleet), [LLAMA, QWEN], 8, 40, kinds=("chat", "generate")).start()
    new = Load(target(fleet), [MISTRAL], 2, 40, kinds=("chat", "generate")).start()
    swap(fleet, MISTRAL)
    on_alias, on_old, on_new = alias.stop(), old.stop(), new.stop()
    report = newest_report()
    assert report["outcome"] == "swapped" and tagged_models(fleet) == dict.fromkeys(
        GPU_HOSTS, MISTRAL
    )

    # The alias: never a failure or a cut stream, on either client, for the whole roll.
    assert not failures(on_alias.outcomes), failures(on_alias.outcomes)[:5]
    assert {o.kind for o in on_alias.outcomes} == {"generate", "chat", "openai-chat", "embed"}
    assert on_alias.summary()["served"] >= 20

    # The old names: served until retired, then the LB's own 404 at once.
    assert set(report["retired"]) == {LLAMA, QWEN}, report["retired"]
    lb_404s = []
    for o in on_old.outcomes:
        retired = at(report["retired"][o.model])
        if o.verdict != "served":
            assert o.status == 404 and NOT_SERVED in o.detail, o
            assert wall(o.started) >= retired, (o, report["retired"])
            lb_404s.append(o.ended - o.started)
    served_before = {
        m: sum(o.verdict == "served" and o.model == m for o in on_old.outcomes)
        for m in (LLAMA, QWEN)
    }
    assert all(count > 0 for count in served_before.values()), served_before
    assert lb_404s, "no request for a retired name was made"
    median = statistics.median(lb_404s)
    print(f"LB 404 for retired names: {len(lb_404s)}, median {median * 1000:.1f} ms")
    # At once, never queued for a host: a queued request waits up to timeout queue (2 min).
    # What the LB's own answers cost is benchmarks/lb.py's figure, not a timed test's.
    p95 = sorted(lb_404s)[int(0.95 * (len(lb_404s) - 1))]
    assert p95 < 1.0, sorted(lb_404s)[-5:]

    # The new name: the LB's 404 until the canary is back, served from then on.
    canary_back = at(report["hosts"][0]["back_at"])
    for o in failures(on_new.outcomes):
        assert o.status == 404 and wall(o.started) < canary_back, (o, canary_back)
    assert any(o.verdict == "served" for o in on_new.outcomes)

    # The report counts the 404s the clients saw, per name, up to when it read the counters.
    counted = at(report["counted_at"])
    per_name = report["requests"]["per_name"]
    for model in (LLAMA, QWEN):
        seen = [o for o in failures(on_old.outcomes) if o.model == model]
        surely = sum(wall(o.ended) < counted for o in seen)
        assert surely <= per_name[model]["failed"] <= len(seen), (model, per_name[model], surely)
    assert per_name[ALIAS]["failed"] == 0 and per_name[ALIAS]["served"] > 0, per_name
    for row in report["hosts"]:
        assert (row["to"], row["alias"], row["outcome"]) == (MISTRAL, ALIAS, "swapped"), row
        assert row["from"] == MIXED[row["host"]] and 0 <= row["drain_wait_s"] <= row["total_s"]

    # Afterwards: the new model spreads over every host, the alias points at it, and an old
    # name is the LB's 404 that no GPU host sees.
    before = servers()
    for number in range(9):
        assert stream_once(target(fleet), "generate", MISTRAL, 1, number).verdict == "served"
    after = servers()
    gained = {
        h: int(after[(MISTRAL_BACKEND, h)]["stot"]) - int(before[(MISTRAL_BACKEND, h)]["stot"])
        for h in GPU_HOSTS
    }
    assert all(count > 0 for count in gained.values()), gained
    assert not any(key[0].startswith(("be_model_llama", "be_model_qwen")) for key in after)
    totals = backend_totals()
    gone = stream_once(target(fleet), "chat", LLAMA, 1, 0)
    assert (gone.status, NOT_SERVED in gone.detail) == (404, True), gone
    assert backend_totals() == totals, "a retired name reached a GPU host"


def test_a_second_swap_to_the_same_model_changes_no_host(fleet):
    output = swap(fleet, MISTRAL)
    assert "lb-1" in output and not changed_hosts(output), changed_hosts(output)
