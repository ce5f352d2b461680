"""The stand-in answers as Ollama does, seen through Ollama's own Python client and plain HTTP."""

import hashlib
import json
import time
import urllib.error
import urllib.request

import ollama
import pytest
from standin_server import SMALL


def client(standin):
    return ollama.Client(host=standin.url)


def http(standin, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(standin.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_root_and_version(standin):
    assert http(standin, "GET", "/")[2] == b"Ollama is running"
    status, _headers, body = http(standin, "GET", "/api/version")
    assert status == 200
    assert json.loads(body) == {"version": "0.14.2"}


def test_pull_streams_progress_then_success(standin):
    updates = list(client(standin).pull("llama3.1:8b", stream=True))
    statuses = [u.status for u in updates]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = [u for u in updates if u.digest]
    assert {u.digest for u in layers} and all(u.digest.startswith("sha256:") for u in layers)
    finished = {u.digest: u for u in layers if u.completed is not None}
    assert all(u.completed == u.total for u in finished.values())
    assert max(u.total for u in layers) == SMALL


def test_pull_without_stream_answers_once(standin):
    assert client(standin).pull("qwen2.5:7b", stream=False).status == "success"


def test_list_shows_pulled_models_with_size_digest_and_details(standin):
    client(standin).pull("llama3.1:8b")
    (model,) = client(standin).list().models
    assert model.model == "llama3.1:8b"
    assert model.size > SMALL
    assert len(model.digest) == 64
    assert model.details.family == "llama"
    assert model.details.parameter_size == "8.0B"
    assert model.details.quantization_level == "Q4_K_M"


def test_store_layout_is_ollamas(standin):
    client(standin).pull("llama3.1:8b")
    manifest_file = standin.models / "manifests/registry.ollama.ai/library/llama3.1/8b"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    media_types = [layer["mediaType"] for layer in manifest["layers"]]
    assert media_types[0] == "application/vnd.ollama.image.model"
    assert "application/vnd.ollama.image.template" in media_types
    for layer in [manifest["config"], *manifest["layers"]]:
        blob = standin.models / "blobs" / layer["digest"].replace(":", "-")
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]
        assert blob.stat().st_size == layer["size"]
    assert sorted(p.name for p in (standin.models / "blobs").iterdir()) == sorted(
        layer["digest"].replace(":", "-") for layer in [manifest["config"], *manifest["layers"]]
    )


def test_generate_streams_tokens_and_ends_with_timings(standin):
    client(standin).pull("llama3.1:8b")
    started = time.monotonic()
    chunks = list(
        client(standin).generate(
            model="llama3.1:8b",
            prompt="Why is the sky blue?",
            stream=True,
            options={"num_predict": 40},
        )
    )
    elapsed = time.monotonic() - started
    assert all(not c.done for c in chunks[:-1])
    assert len(chunks) == 41
    final = chunks[-1]
    assert final.done and final.done_reason == "stop"
    assert final.eval_count == 40
    for field in ("total_duration", "load_duration", "prompt_eval_count", "eval_duration"):
        assert getattr(final, field) is not None
    assert elapsed >= 40 / 200  # tokens are paced at OLLAMA_STANDIN_TOKENS_PER_SECOND
    assert "".join(c.response for c in chunks).strip()


def test_generate_without_stream_and_chat_both_ways(standin):
    client(standin).pull("llama3.1:8b")
    whole = client(standin).generate(model="llama3.1:8b", prompt="hi", stream=False)
    assert whole.done and whole.response and whole.context
    reply = client(standin).chat(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.role == "assistant" and reply.message.content and reply.done
    parts = list(
        client(standin).chat(
            model="llama3.1:8b", stream=True, messages=[{"role": "user", "content": "hi"}]
        )
    )
    assert parts[-1].done and all(p.message.role == "assistant" for p in parts)


def test_ps_load_keep_alive_and_unload(standin):
    api = client(standin)
    api.pull("llama3.1:8b")
    assert api.ps().models == []
    loaded = api.generate(model="llama3.1:8b", prompt="")
    assert loaded.done_reason == "load"
    (running,) = api.ps().models
    assert running.model == "llama3.1:8b" and running.size > SMALL and running.expires_at
    unloaded = api.generate(model="llama3.1:8b", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert api.ps().models == []
    api.generate(model="llama3.1:8b", prompt="hi", keep_alive="1s", options={"num_predict": 2})
    assert len(api.ps().models) == 1
    time.sleep(1.6)
    assert api.ps().models == []


def test_show_reports_details_template_and_parameters(standin):
    client(standin).pull("llama3.1:8b")
    shown = client(standin).show("llama3.1:8b")
    assert shown.details.family == "llama"
    assert "<|start_header_id|>" in shown.template
    assert "stop" in shown.parameters
    assert shown.capabilities == ["completion"]


def test_delete_removes_the_model_and_its_blobs(standin):
    api = client(standin)
    api.pull("llama3.1:8b")
    api.delete("llama3.1:8b")
    assert api.list().models == []
    assert list((standin.models / "blobs").iterdir()) == []
    with pytest.raises(ollama.ResponseError) as missing:
        api.delete("llama3.1:8b")
    assert missing.value.status_code == 404


def test_delete_keeps_blobs_another_model_shares(standin):
    api = client(standin)
    api.pull("llama3.1:8b")
    manifests = standin.models / "manifests/registry.ollama.ai/library/llama3.1"
    (manifests / "latest").write_bytes((manifests / "8b").read_bytes())
    api.delete("llama3.1:8b")
    assert [m.model for m in api.list().models] == ["llama3.1:latest"]
    assert len(list((standin.models / "blobs").iterdir())) == 5


def test_embed_returns_one_vector_per_input(standin):
    client(standin).pull("nomic-embed-text")
    result = client(standin).embed(model="nomic-embed-text", input=["sky", "grass"])
    assert len(result.embeddings) == 2
    assert all(len(v) == 32 for v in result.embeddings)
    assert result.embeddings[0] != result.embeddings[1]


def test_unknown_model_is_a_404_naming_it(standin):
    with pytest.raises(ollama.ResponseError) as error:
        client(standin).generate(model="nope:1b", prompt="hi")
    assert error.value.status_code == 404
    assert error.value.error == "model 'nope:1b' not found"
    status, _headers, body = http(standin, "POST", "/api/show", {"model": "nope"})
    assert status == 404 and json.loads(body) == {"error": "model 'nope' not found"}


def test_malformed_json_and_missing_body_are_400(standin):
    status, _headers, body = http(standin, "POST", "/api/generate", raw=b"{not json")
    assert status == 400 and "error" in json.loads(body)
    status, _headers, body = http(standin, "POST", "/api/generate", raw=b"")
    assert status == 400 and json.loads(body) == {"error": "missing request body"}
    status, _headers, body = http(standin, "GET", "/api/nothing")
    assert status == 404 and body == b"404 page not found"


def test_pulling_an_unknown_model_fails_as_ollama_does(standin):
    with pytest.raises(ollama.ResponseError) as error:
        list(client(standin).pull("no-such-model:7b", stream=True))
    assert error.value.error == "pull model manifest: file does not exist"
    status, _headers, body = http(
        standin, "POST", "/api/pull", {"model": "no-such-model", "stream": False}
    )
    assert status == 500
    assert json.loads(body) == {"error": "pull model manifest: file does not exist"}


def test_a_blob_with_the_wrong_digest_fails_and_leaves_nothing(standin):
    with pytest.raises(ollama.ResponseError) as error:
        client(standin).pull("mistral:7b")
    assert error.value.error.startswith("digest mismatch, file must be downloaded again: want ")
    assert client(standin).list().models == []
    assert list((standin.models / "blobs").iterdir()) == []
    assert not (standin.models / "manifests/registry.ollama.ai/library/mistral").exists()


def test_insecure_pull_by_registry_address(standin, registry):
    host = registry.removeprefix("http://")
    name = f"{host}/library/qwen2.5:7b"
    with pytest.raises(ollama.ResponseError):
        client(standin).pull(name)  # https by default, as in Ollama
    assert client(standin).pull(name, insecure=True).status == "success"
    assert [m.model for m in client(standin).list().models] == [name]
    assert (standin.models / "manifests" / host / "library/qwen2.5/7b").exists()
