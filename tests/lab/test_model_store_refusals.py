"""A bake that names a model the registry lacks fails, naming the model, and leaves the
seed without it; the run's exit code says so."""

import pytest
from labctl import ansible_playbook, gpufleet, on_host

pytestmark = pytest.mark.lab_fresh_hosts

HOST = "gpu-2"
PLAYBOOK = """
- name: Bake models into the seed
  hosts: {host}
  become: true
  roles:
    - role: gpufleet.fleet.ollama
    - role: gpufleet.fleet.model_store
      vars:
        model_store_models: [qwen2.5:7b, no-such-model:1b]
        model_store_hydrate_now: false
"""


def test_a_model_missing_from_the_registry_fails_the_bake_naming_it(lab, tmp_path):
    gpufleet("lab", "reset", HOST)
    playbook = tmp_path / "bake.yml"
    playbook.write_text(PLAYBOOK.format(host=HOST))
    result = ansible_playbook(lab["inventory"], str(playbook), timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "ollama_model no-such-model:1b: POST http://127.0.0.1:11435/api/pull" in output
    assert "pull model manifest: file does not exist" in output
    seed = on_host(HOST, "ls /opt/gpufleet/models-seed/manifests/registry.ollama.ai/library")
    assert seed.split() == ["qwen2.5"]
    assert "inactive" in on_host(HOST, "systemctl is-active gpufleet-model-seed", check=False)
