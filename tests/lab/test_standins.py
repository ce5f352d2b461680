"""The lab serves the Ollama stand-in's release and models to its hosts, as production's
download site and registry would: by URL and sha256, and by bare model name."""

import json
import urllib.request
from pathlib import Path

import pytest
from labctl import on_host

pytestmark = pytest.mark.lab_fresh_hosts

INSTALL = "/opt/ollama-standin-test"


def standin_vars(lab):
    return json.loads(Path(lab["lab_vars"]).read_text())


def test_a_lab_host_installs_the_release_by_url_and_checksum_and_pulls_by_bare_name(lab):
    release = standin_vars(lab)
    host = next(h for h in lab["hosts"] if h["name"] == "gpu-2")
    address = host["address"]
    script = f"""set -e
sudo apt-get update -qq
sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd curl >/dev/null
sudo rm -rf {INSTALL} && sudo install -d -o admin {INSTALL} && cd {INSTALL}
curl -fsS -o release.tar.zst {release["ollama_release_url"]}
echo "{release["ollama_release_sha256"]}  release.tar.zst" | sha256sum --check --quiet
tar --zstd -xf release.tar.zst
export OLLAMA_HOST={address}:11434 OLLAMA_MODELS={INSTALL}/models
export OLLAMA_STANDIN_REGISTRY={release["lab_model_registry"]}
setsid {INSTALL}/bin/ollama serve >/dev/null 2>serve.log </dev/null &
for i in $(seq 50); do curl -fs http://{address}:11434/ >/dev/null && break; sleep 0.2; done
bin/ollama --version | head -1
bin/ollama pull llama3.1:8b | tail -1
ls models/manifests/registry.ollama.ai/library/llama3.1
"""
    out = on_host("gpu-2", script).splitlines()
    assert out == [f"ollama version is {release['ollama_version']}", "success", "8b"]

    # Asked on the host itself: the host's firewall keeps Ollama's port for the LB hosts.
    body = json.dumps({"model": "llama3.1:8b", "prompt": "hi", "stream": False})
    answer = json.loads(
        on_host("gpu-2", f"curl -fsS -m 30 -d '{body}' http://{address}:11434/api/generate")
    )
    assert answer["done"] and answer["response"]
    serving = f"'[{INSTALL[0]}]{INSTALL[1:]}/bin/ollama serve'"
    on_host("gpu-2", f"pkill -f {serving}; sudo rm -rf {INSTALL}")
    # Gone: an Ollama left on gpu-2 would answer the LB's checks for the tests after this.
    assert not on_host("gpu-2", f"pgrep -f {serving} || true").strip()


def test_lab_status_names_the_registry(lab):
    assert lab["registry"].startswith("http://10.77.0.1:")
    with urllib.request.urlopen(lab["registry"] + "/v2/library/qwen2.5/manifests/7b") as reply:
        assert json.load(reply)["layers"][0]["mediaType"] == "application/vnd.ollama.image.model"
