"""Concurrency, the loaded-model cap, the store across directories, pruning, CLI, release."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading

import ollama
import pytest
from standin_server import STANDIN_MODULE, start_standin

from gpufleet.lab.standins.ollama.release import archive_name, build


@pytest.fixture
def serve(tmp_path, registry):
    started = []

    def _serve(models=None, **env):
        server = start_standin(models or tmp_path / "models", registry, **env)
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


def test_requests_beyond_parallel_and_queue_get_503(serve):
    server = serve(
        OLLAMA_NUM_PARALLEL="1", OLLAMA_MAX_QUEUE="1", OLLAMA_STANDIN_TOKENS_PER_SECOND="20"
    )
    api = ollama.Client(host=server.url)
    api.pull("llama3.1:8b")
    api.generate(model="llama3.1:8b", prompt="")
    outcomes = []

    def ask():
        try:
            api.generate(model="llama3.1:8b", prompt="hi", options={"num_predict": 20})
            outcomes.append(200)
        except ollama.ResponseError as exc:
            outcomes.append((exc.status_code, exc.error))

    threads = [threading.Thread(target=ask) for _client in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    busy = (503, "server busy, please try again.  maximum pending requests exceeded")
    assert sorted(outcomes, key=str) == sorted([200, 200, busy], key=str)


def test_parallel_requests_share_one_model(serve):
    server = serve(OLLAMA_NUM_PARALLEL="4", OLLAMA_STANDIN_TOKENS_PER_SECOND="20")
    api = ollama.Client(host=server.url)
    api.pull("llama3.1:8b")
    api.generate(model="llama3.1:8b", prompt="")
    done = []
    threads = [
        threading.Thread(
            target=lambda: done.append(
                api.generate(model="llama3.1:8b", prompt="hi", options={"num_predict": 10})
            )
        )
        for _client in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(done) == 4
    # Four 10-token answers at 20 tokens/s in parallel take about 0.5 s each, not 2 s in all.
    assert max(d.total_duration for d in done) < 1.5e9


def test_loaded_models_are_capped_least_recently_used_first(serve):
    server = serve(OLLAMA_MAX_LOADED_MODELS="1")
    api = ollama.Client(host=server.url)
    api.pull("llama3.1:8b")
    api.pull("qwen2.5:7b")
    api.generate(model="llama3.1:8b", prompt="")
    api.generate(model="qwen2.5:7b", prompt="")
    assert [m.model for m in api.ps().models] == ["qwen2.5:7b"]


def test_keep_alive_from_the_environment_applies(serve):
    server = serve(OLLAMA_KEEP_ALIVE="-1")
    api = ollama.Client(host=server.url)
    api.pull("llama3.1:8b")
    api.generate(model="llama3.1:8b", prompt="")
    (running,) = api.ps().models
    assert running.expires_at.year > 2100


def test_a_copied_store_lists_the_same_models(serve, tmp_path):
    first = serve()
    ollama.Client(host=first.url).pull("llama3.1:8b")
    copy = tmp_path / "copied"
    for part in ("manifests", "blobs"):
        shutil.copytree(first.models / part, copy / part)
    second = serve(models=copy)
    assert [m.model for m in ollama.Client(host=second.url).list().models] == ["llama3.1:8b"]
    second_answer = ollama.Client(host=second.url).generate(model="llama3.1:8b", prompt="hi")
    assert second_answer.done


def test_pruning_at_start_removes_blobs_of_a_deleted_manifest(serve, tmp_path):
    first = serve()
    ollama.Client(host=first.url).pull("llama3.1:8b")
    first.stop()
    (first.models / "manifests/registry.ollama.ai/library/llama3.1/8b").unlink()
    (first.models / "blobs" / "sha256-0123-partial").write_bytes(b"half")
    kept = serve(models=first.models, OLLAMA_NOPRUNE="1")
    assert len(list((first.models / "blobs").iterdir())) == 6
    kept.stop()
    serve(models=first.models)
    assert list((first.models / "blobs").iterdir()) == []


def run_cli(*args, host):
    env = {**os.environ, "OLLAMA_HOST": host}
    return subprocess.run(
        [sys.executable, "-m", STANDIN_MODULE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_version_says_it_is_a_stand_in():
    result = run_cli("--version", host="127.0.0.1:1")
    lines = result.stdout.splitlines()
    assert lines[0] == "ollama version is 0.14.2"
    assert "stand-in" in lines[1] and "not Ollama" in lines[1]


def test_cli_pull_list_show_ps_rm(serve):
    server = serve()
    host = server.url.removeprefix("http://")
    pulled = run_cli("pull", "llama3.1:8b", host=host)
    assert pulled.returncode == 0 and pulled.stdout.splitlines()[-1] == "success"
    listing = run_cli("list", host=host).stdout.splitlines()
    assert listing[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert listing[1].startswith("llama3.1:8b")
    assert "architecture        llama" in run_cli("show", "llama3.1:8b", host=host).stdout
    assert run_cli("ps", host=host).stdout.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"]
    assert run_cli("rm", "llama3.1:8b", host=host).stdout.strip() == "deleted 'llama3.1:8b'"
    missing = run_cli("rm", "llama3.1:8b", host=host)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: model 'llama3.1:8b' not found"


def test_cli_without_a_server_says_so():
    result = run_cli("list", host="127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: could not connect to ollama app, is it running?"


@pytest.mark.parametrize(("version", "suffix"), [("0.14.2", "tar.zst"), ("0.13.5", "tgz")])
def test_release_archive_has_ollamas_layout_and_runs(tmp_path, version, suffix):
    archive, digest = build(tmp_path / "dist", version)
    assert archive.name == archive_name(version) == f"ollama-linux-amd64.{suffix}"
    sha_line = archive.with_name(archive.name + ".sha256").read_text()
    assert sha_line == f"{digest}  {archive.name}\n"
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(unpacked)], check=True)
    assert (unpacked / "bin/ollama").stat().st_mode & 0o111
    assert (unpacked / "lib/ollama").is_dir()
    result = subprocess.run(
        [str(unpacked / "bin/ollama"), "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[0] == f"ollama version is {version}"
    if suffix == "tgz":
        with tarfile.open(archive) as tar:
            assert sorted(tar.getnames())[:2] == ["bin", "bin/ollama"]


def test_registry_serves_manifests_with_their_digest(registry):
    import hashlib
    import urllib.request

    url = f"{registry}/v2/library/llama3.1/manifests/8b"
    with urllib.request.urlopen(url) as response:
        body = response.read()
        assert response.headers["Docker-Content-Digest"] == (
            "sha256:" + hashlib.sha256(body).hexdigest()
        )
    assert json.loads(body)["schemaVersion"] == 2
