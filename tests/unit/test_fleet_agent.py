"""The fleet agent: its verdicts, the lines HAProxy's agent-check reads, IMDSv2 reads."""

import socket
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
import repo_scripts
from moto_region import aws
from prometheus_client.parser import text_string_to_metric_families

from gpufleet.lab.standins import imds as imds_standin

# Installed beside the agent by the role, under this name.
repo_scripts.load("plugins/module_utils/model_names.py", "gpufleet_model_names")
agent = repo_scripts.load("roles/fleet_agent/files/gpufleet_fleet_agent.py")
gpu_metrics = repo_scripts.load("roles/gpu_metrics/files/gpufleet_gpu_metrics.py")

LLAMA, QWEN = "llama3.1:8b", "qwen2.5:7b"
LLAMA_DIGEST = "sha256:" + "1" * 64


def seen(**fields):
    base = {"models_on_disk": {LLAMA: LLAMA_DIGEST}, "digests_loaded": {LLAMA_DIGEST}}
    return agent.Observation(**{**base, **fields})


@pytest.mark.parametrize(
    ("observation", "reason"),
    [
        (seen(flag=True), "maintenance flag is set"),
        (
            seen(spot_action={"action": "terminate", "time": "2026-11-23T02:00:00Z"}),
            "spot interruption: terminate at 2026-11-23T02:00:00Z",
        ),
        (seen(rebalance={"noticeTime": "2026-11-23T01:58:00Z"}), "rebalance recommendation"),
        (
            seen(drain_tag="scale-in since 2026-12-07T17:00:00Z"),
            "drain asked by the instance's tag gpufleet:drain (scale-in since",
        ),
        (seen(terminating=True), "its Auto Scaling group is terminating it"),
        (seen(ollama_error="connection refused"), "Ollama is unhealthy: connection refused"),
        (seen(models_on_disk={}), f"expected model {LLAMA} is missing"),
    ],
)
def test_each_reason_drains_the_host_and_is_named(observation, reason):
    verdict = agent.decide(observation, [LLAMA], cold_weight=10)
    assert (verdict.state, verdict.weight) == ("drain", 0)
    assert any(r.startswith(reason) for r in verdict.reasons), verdict.reasons
    assert agent.agent_reply(verdict, say_ready=True) == "drain\n"


def test_a_cold_host_is_ready_at_low_weight_and_a_warm_one_at_full():
    cold = agent.decide(seen(digests_loaded=set()), [LLAMA], cold_weight=10)
    assert (cold.state, cold.weight) == ("ready", 10)
    warm = agent.decide(seen(), [LLAMA], cold_weight=10)
    assert (warm.state, warm.weight, warm.reasons) == ("ready", 100, [])


def test_a_name_without_a_tag_is_ollamas_latest():
    verdict = agent.decide(
        seen(models_on_disk={"nomic-embed-text:latest": LLAMA_DIGEST}), ["nomic-embed-text"], 10
    )
    assert verdict.state == "ready"


def test_a_pool_alias_is_warm_once_its_model_is_loaded_under_either_name():
    """Ollama loads a model once for all its names: /api/ps lists it by the first name asked."""
    on_disk = {LLAMA: LLAMA_DIGEST, "chat:latest": LLAMA_DIGEST}
    warm = agent.decide(seen(models_on_disk=on_disk), [LLAMA, "chat"], cold_weight=10)
    assert (warm.state, warm.weight) == ("ready", 100)
    cold = agent.decide(
        seen(models_on_disk=on_disk, digests_loaded={"sha256:" + "2" * 64}), [LLAMA, "chat"], 10
    )
    assert (cold.state, cold.weight) == ("ready", 10)
    missing = agent.decide(seen(), [LLAMA, "chat"], cold_weight=10)
    assert missing.reasons == ["expected model chat is missing"]
    assert agent.agent_reply_for("chat", warm, False, [LLAMA, "chat"]) == "100%\n"
    assert agent.agent_reply_for("chat", warm, False, [LLAMA]) == "maint\n"


def test_ready_is_said_only_in_its_window_so_runtime_drains_stay():
    """HAProxy ends any drain, its runtime API's included, when an agent says `ready`."""
    verdict = agent.Verdict("ready", 100)
    assert agent.agent_reply(verdict, say_ready=True) == "ready 100%\n"
    assert agent.agent_reply(verdict, say_ready=False) == "100%\n"


def agent_args(tmp_path, *extra: str):
    """An agent's arguments: nothing listens at its Ollama URL; its files are in tmp_path."""
    return agent.parse_args(
        [
            "--agent-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--ollama",
            "http://127.0.0.1:9",
            "--models-file",
            str(tmp_path / "models"),
            "--flag",
            str(tmp_path / "maintenance"),
            *extra,
        ]
    )


def test_the_models_file_has_one_model_per_line_and_may_be_absent(tmp_path):
    models = tmp_path / "models"
    assert agent.read_models(models) == []
    models.write_text("# Ansible managed\n\nllama3.1:8b\n  nomic-embed-text \n")
    assert agent.read_models(models) == [LLAMA, "nomic-embed-text"]


def test_a_rewritten_models_file_moves_the_host_between_backends_without_a_restart(tmp_path):
    (tmp_path / "models").write_text(f"{LLAMA}\n")
    running = agent.Agent(agent_args(tmp_path))
    running.check()
    # Nothing answers at its Ollama URL: the host drains, in the backends of its models only.
    assert (running.reply(LLAMA), running.reply(QWEN)) == ("drain\n", "maint\n")
    (tmp_path / "models").write_text(f"{QWEN}\n")
    running.check()
    assert (running.reply(LLAMA), running.reply(QWEN)) == ("maint\n", "drain\n")
    assert running.state()["expected_models"] == [QWEN]


def test_a_flag_set_between_checks_is_seen_at_once_not_at_the_next_interval(tmp_path):
    running = agent.Agent(agent_args(tmp_path, "--interval", "60"))
    threading.Thread(target=running.run_checks, daemon=True).start()
    time.sleep(2 * agent.WATCH_STEP)
    assert "maintenance flag is set" not in running.state()["reasons"]
    (tmp_path / "maintenance").touch()
    deadline = time.monotonic() + 5
    while "maintenance flag is set" not in running.state()["reasons"]:
        assert time.monotonic() < deadline, running.state()
        time.sleep(0.05)


def test_the_end_of_its_own_drain_opens_the_ready_window(tmp_path):
    running = agent.Agent(agent_args(tmp_path, "--ready-window", "0"))
    running.settle(agent.Verdict("ready", 100), [])
    running.settle(agent.Verdict("drain", 0, ["maintenance flag is set"]), [])
    assert running.reply() == "drain\n"
    running.args.ready_window = 60
    running.settle(agent.Verdict("ready", 100), [])
    assert running.reply() == "ready 100%\n"


def test_a_model_backend_gets_maint_from_a_host_that_does_not_serve_its_model():
    """agent-send names the backend's model; be_default sends nothing and gets the verdict."""
    ready, drained = agent.Verdict("ready", 100), agent.Verdict("drain", 0, ["flag"])
    served = [LLAMA, "nomic-embed-text"]
    assert agent.agent_reply_for("qwen2.5:7b", ready, True, served) == "maint\n"
    assert agent.agent_reply_for("qwen2.5:7b", drained, False, served) == "maint\n"
    assert agent.agent_reply_for(LLAMA, ready, False, served) == "100%\n"
    assert agent.agent_reply_for("nomic-embed-text:latest", drained, True, served) == "drain\n"
    assert agent.agent_reply_for("", ready, True, []) == "ready 100%\n"


def test_the_agent_check_reads_agent_send_and_answers_each_backend(tmp_path):
    running = agent.Agent(agent_args(tmp_path, "--ready-window", "0"))
    running.settle(agent.Verdict("ready", 100), [LLAMA])
    server = agent.serve_agent_check(running, ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def ask(sent: bytes) -> bytes:
        with socket.create_connection(server.server_address, timeout=5) as connection:
            connection.sendall(sent)
            return connection.recv(100)

    try:
        assert ask(b"qwen2.5:7b\n") == b"maint\n"
        assert ask(b"llama3.1:8b\n") == b"100%\n"
        assert ask(b"") == b"100%\n"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def imds(tmp_path, moto, monkeypatch):
    """The IMDS stand-in on loopback, its instances described by the tests' moto server: the
    agent's requests come from 127.0.0.1, the address of the instance a test runs there. The
    agent waits longer than its 2 s for it: the stand-in asks the moto server, which a busy
    machine (the lab tests beside these) can slow past that."""
    monkeypatch.setattr(agent, "HTTP_TIMEOUT", 15.0)
    notices = tmp_path / "notices"
    instances = imds_standin.Instances(moto, "us-east-1")
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), imds_standin.handler(notices, imds_standin.Tokens(), instances)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield notices, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def instance_at_loopback(moto: str, tags_in_metadata: str) -> str:
    """A running instance at 127.0.0.1, with instance tags in its metadata or not."""
    ec2 = aws(moto, "ec2")
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    return ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        PrivateIpAddress="127.0.0.1",
        MetadataOptions={"HttpTokens": "required", "InstanceMetadataTags": tags_in_metadata},
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "gpufleet:role", "Value": "gpu"}]}
        ],
    )["Instances"][0]["InstanceId"]


def test_the_scalers_drain_tag_is_read_from_imds_and_can_be_taken_back(imds, moto):
    _notices, url = imds
    instance = instance_at_loopback(moto, "enabled")
    reader = agent.Imds(url)
    assert reader.text("/latest/meta-data/tags/instance") == "gpufleet:role"
    assert reader.text(agent.DRAIN_TAG_PATH) is None
    tag = {"Key": "gpufleet:drain", "Value": "scale-in since 2026-12-07T17:00:00Z"}
    aws(moto, "ec2").create_tags(Resources=[instance], Tags=[tag])
    time.sleep(imds_standin.LOOKUP_SECONDS)
    assert reader.text(agent.DRAIN_TAG_PATH) == tag["Value"]
    aws(moto, "ec2").delete_tags(Resources=[instance], Tags=[{"Key": "gpufleet:drain"}])
    time.sleep(imds_standin.LOOKUP_SECONDS)
    assert reader.text(agent.DRAIN_TAG_PATH) is None
    # An instance in no Auto Scaling group has no target lifecycle state.
    assert reader.text(agent.LIFECYCLE_PATH) is None


def test_tags_are_not_in_the_metadata_unless_the_instance_allows_it(imds, moto):
    _notices, url = imds
    instance_at_loopback(moto, "disabled")
    assert agent.Imds(url).text("/latest/meta-data/tags/instance") is None


def test_the_metrics_collector_reports_the_agents_drain_notices_and_models(tmp_path, imds):
    """gpu_metrics reads a real agent's /state: drained by a spot notice from the IMDS
    stand-in, expecting its model and the pool's alias, named as Ollama lists them."""
    notices, url = imds
    (tmp_path / "models").write_text(f"{LLAMA}\nchat\n")
    running = agent.Agent(agent_args(tmp_path, "--imds", url))
    imds_standin.give_notice(notices, "127.0.0.1", "spot")
    running.check()
    server = agent.serve_state(running, ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        state_url = f"http://127.0.0.1:{server.server_address[1]}"
        text = gpu_metrics.collect("/nonexistent/nvidia-smi", None, state_url)
    finally:
        server.shutdown()
        server.server_close()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.startswith(("gpufleet_gpu", "gpufleet_metrics"))
    }
    assert values == {
        ("gpufleet_agent_up", ()): 1,
        ("gpufleet_agent_draining", ()): 1,
        ("gpufleet_spot_interruption_notice", ()): 1,
        ("gpufleet_rebalance_recommendation", ()): 0,
        ("gpufleet_model_expected", (("model", LLAMA),)): 1,
        ("gpufleet_model_expected", (("model", "chat:latest"),)): 1,
    }


def test_an_agent_that_does_not_answer_is_agent_up_0_and_nothing_else():
    text = gpu_metrics.collect("/nonexistent/nvidia-smi", None, "http://127.0.0.1:9")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["gpufleet_agent_up"].samples[0].value == 0
    assert not {"gpufleet_agent_draining", "gpufleet_model_expected"} & set(families)


def test_imds_has_no_notice_until_one_is_given_then_keeps_it(imds):
    notices, url = imds
    reader = agent.Imds(url)
    assert reader.notice(agent.SPOT_ACTION_PATH) is None
    given = imds_standin.give_notice(notices, "127.0.0.1", "spot")
    assert reader.notice(agent.SPOT_ACTION_PATH) == given
    assert given["action"] == "terminate" and given["time"].endswith("Z")
    assert reader.notice(agent.REBALANCE_PATH) is None


def test_an_expired_token_is_replaced(imds):
    notices, url = imds
    reader = agent.Imds(url)
    reader.notice(agent.REBALANCE_PATH)
    stale = "never-issued"
    reader.token = stale
    imds_standin.give_notice(notices, "127.0.0.1", "rebalance")
    assert "noticeTime" in reader.notice(agent.REBALANCE_PATH)
    assert reader.token not in (stale, "")


def test_a_group_instance_is_in_service_until_its_group_terminates_it(moto):
    ec2, autoscaling = aws(moto, "ec2"), aws(moto, "autoscaling")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24")["Subnet"]["SubnetId"]
    image = sorted(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])[0]
    ec2.create_launch_template(
        LaunchTemplateName="gpufleet-prod-chat", LaunchTemplateData={"ImageId": image}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="gpufleet-prod-chat",
        LaunchTemplate={"LaunchTemplateName": "gpufleet-prod-chat"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=1,
        VPCZoneIdentifier=subnet,
    )
    [member] = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]
    reservations = ec2.describe_instances(InstanceIds=[member["InstanceId"]])["Reservations"]
    address = reservations[0]["Instances"][0]["PrivateIpAddress"]
    instances = imds_standin.Instances(moto, "us-east-1")
    assert imds_standin.metadata(instances, address, imds_standin.LIFECYCLE_PATH) == "InService"
    assert imds_standin.metadata(instances, "10.9.0.250", imds_standin.LIFECYCLE_PATH) is None
    # moto's groups never hold an instance in a lifecycle hook: as the API would describe it.
    held = {"tags": None, "lifecycle": "Terminating:Wait"}
    instances.seen[address] = (time.monotonic(), held)
    assert imds_standin.metadata(instances, address, imds_standin.LIFECYCLE_PATH) == "Terminated"
