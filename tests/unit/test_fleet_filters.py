"""The fleet model's filters: names, backends, routes, aliases, and serial's batches as Ansible
itself makes them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import repo_scripts
from ansible.errors import AnsibleFilterError

fleet = repo_scripts.load("plugins/filter/fleet.py")
REPO = Path(__file__).resolve().parents[2]

LLAMA, QWEN = "llama3.1:8b", "qwen2.5:7b"
MIXED = {
    "gpu-1": {"pool": "chat", "model": LLAMA, "alias": "chat"},
    "gpu-2": {"pool": "chat", "model": LLAMA, "alias": "chat"},
    "gpu-3": {"pool": "chat", "model": QWEN, "alias": "chat"},
    "gpu-4": {"pool": "batch", "model": "nomic-embed-text", "alias": ""},
}


@pytest.mark.parametrize(
    ("name", "tag_required", "problem"),
    [
        (LLAMA, True, ""),
        ("chat", False, ""),
        ("library/llama3.1:8b", True, ""),
        ("registry.example.com:5000/team/model:v1", True, ""),
        ("chat", True, "has no tag"),
        ("Llama 3", False, "is not an Ollama model name"),
        ("-chat", False, "is not an Ollama model name"),
        ("a:b:c", False, "is not an Ollama model name"),
        ("", False, "is not a model name"),
        (7, False, "is not a model name"),
    ],
)
def test_model_names_are_checked_by_one_function(name, tag_required, problem):
    found = fleet.ollama_name_problem(name, tag_required)
    assert (problem in found) if problem else found == "", found


def test_a_host_reads_its_alias_from_the_pool_variable_before_the_inventory_s():
    tags = {"gpufleet_pool": "chat", "gpufleet_model": LLAMA, "gpufleet_alias": "tagged"}
    assert fleet.fleet_host(tags)["alias"] == "tagged"
    assert fleet.fleet_host({**tags, "fleet_pool_alias": "chat"})["alias"] == "chat"
    assert fleet.fleet_host({}) == {"pool": "default", "model": "", "alias": ""}


def test_models_whose_names_differ_only_in_punctuation_get_their_own_backends():
    names = ["llama3.1:8b", "llama3-1:8b", "llama3_1:8b", "team/llama3.1:8b", "team.llama3.1:8b"]
    backends = [fleet.fleet_backend(name) for name in names]
    assert len(set(backends)) == len(names), backends
    assert fleet.fleet_backend("team/llama3.1:8b") == "be_model_team::llama3.1:8b"
    assert fleet.fleet_backend("chat", alias=True) == "be_alias_chat"


def test_backends_list_every_host_of_the_pools_that_serve_the_name():
    backends = fleet.fleet_backends(MIXED, {"chat": "mistral:7b"})
    assert backends["be_model_llama3.1:8b"]["hosts"] == ["gpu-1", "gpu-2", "gpu-3"]
    assert backends["be_model_mistral:7b"]["pools"] == ["chat"]
    assert backends["be_alias_chat"] == {
        "name": "chat",
        "alias": True,
        "pools": ["chat"],
        "hosts": ["gpu-1", "gpu-2", "gpu-3"],
    }
    assert backends["be_model_nomic-embed-text"]["hosts"] == ["gpu-4"]


def test_routes_hold_served_models_and_aliases_and_retire_models_of_leaving_hosts():
    routes = fleet.fleet_routes(MIXED)
    assert routes[LLAMA] == "be_model_llama3.1:8b" and routes[QWEN] == "be_model_qwen2.5:7b"
    assert routes["chat"] == routes["chat:latest"] == "be_alias_chat"
    assert routes["nomic-embed-text:latest"] == "be_model_nomic-embed-text"
    assert "mistral:7b" not in routes, "an incoming model is routed once a host serves it"
    leaving = fleet.fleet_routes(MIXED, ["gpu-3"])
    assert QWEN not in leaving and leaving["chat"] == "be_alias_chat"
    assert fleet.fleet_routes(MIXED, ["gpu-1"])[LLAMA] == "be_model_llama3.1:8b"


@pytest.mark.parametrize(
    ("change", "other", "named"),
    [
        ({"gpu-4": {"pool": "batch", "model": "x:1", "alias": "chat"}}, [], "pools batch, chat"),
        ({"gpu-4": {"pool": "batch", "model": "x:1", "alias": QWEN}}, [], f"'{QWEN}' is also"),
        ({"gpu-4": {"pool": "batch", "model": "x:1", "alias": "Bad Name"}}, [], "batch's alias"),
        ({"gpu-3": {"pool": "chat", "model": QWEN, "alias": "x"}}, [], "chat's hosts disagree"),
        ({}, ["chat:latest"], "pool chat's alias 'chat' is also"),
    ],
)
def test_alias_problems_name_the_pool_and_the_alias(change, other, named):
    problems = fleet.fleet_alias_problems({**MIXED, **change}, other)
    assert any(named in problem for problem in problems), problems


def test_the_default_pools_have_no_alias_problem():
    assert fleet.fleet_alias_problems(MIXED, ["mistral:7b"]) == []


SERIAL_FORMS = {
    "zero": 0,
    "zero_text": "0",
    "two": 2,
    "two_text": "2",
    "half": "50%",
    "tenth": "10%",
    "canary_then_half": [1, "50%"],
    "canary_then_all": [1, 0],
    "texts": ["1", "2"],
    "negative": -1,
    "empty": [],
}
HOSTS = [f"h{n}" for n in range(1, 6)]
BATCH_PLAY = """
- hosts: fleet
  gather_facts: false
  serial: "{{{{ {var} }}}}"
  tasks:
    - ansible.builtin.debug:
        msg: "BATCH {var} {{{{ ansible_play_batch | join(',') }}}}"
      run_once: true
"""


def ansible_batches(tmp_path: Path) -> dict[str, list[list[str]]]:
    """The batches ansible-playbook itself makes for each form, given as -e values are."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps({"fleet": {"hosts": {h: {"ansible_connection": "local"} for h in HOSTS}}})
    )
    playbook = tmp_path / "batches.yml"
    playbook.write_text("".join(BATCH_PLAY.format(var=var) for var in SERIAL_FORMS))
    extra = tmp_path / "forms.json"
    extra.write_text(json.dumps(SERIAL_FORMS))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(playbook),
            "-e",
            f"@{extra}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    made: dict[str, list[list[str]]] = {}
    for var, hosts in re.findall(r"BATCH (\w+) ([\w,]+)", result.stdout):
        made.setdefault(var, []).append(hosts.split(","))
    return made


def test_serial_batches_are_the_batches_ansible_makes(tmp_path):
    made = ansible_batches(tmp_path)
    assert set(made) == set(SERIAL_FORMS), made
    for var, form in SERIAL_FORMS.items():
        assert fleet.serial_batches(form, HOSTS) == made[var], var
    assert made["zero"] == [HOSTS], "serial 0 is every host in one batch"


@pytest.mark.parametrize("form", ["1, 50%", "half", [1, "x%"], 1.5j])
def test_a_serial_ansible_cannot_read_is_refused_naming_it(form):
    with pytest.raises(AnsibleFilterError, match="is not a number of hosts or a percentage"):
        fleet.serial_batches(form, HOSTS)
    assert "is not a number of hosts or a percentage" in fleet.serial_problem(form)
    assert fleet.serial_problem([1, "25%"]) == ""


@pytest.mark.parametrize(
    ("name", "listed"),
    [
        ("chat", "chat:latest"),
        (LLAMA, LLAMA),
        ("team/model", "team/model:latest"),
        ("registry.example.com:5000/model", "registry.example.com:5000/model:latest"),
        ("registry.example.com:5000/team/model:v1", "registry.example.com:5000/team/model:v1"),
    ],
)
def test_a_name_without_a_tag_is_completed_by_one_function_everywhere(name, listed):
    """The filter, the ollama_model module and the fleet agent complete a name alike: a
    registry's port is not a tag."""
    from ansible_collections.gpufleet.fleet.plugins.module_utils import model_names

    agent = repo_scripts.load("plugins/module_utils/model_names.py", "gpufleet_model_names")
    assert fleet.full_model_name(name) == model_names.full_name(name) == listed
    assert agent.full_name(name) == listed
