"""ollama_model against the Ollama stand-in: idempotent, check mode, diff, clear failures."""

import time

import ollama
import pytest
from ansible_run import run_module
from canned_http import Reply, canned_http
from standin_server import start_standin


def call(standin, **args):
    return run_module("gpufleet.fleet.ollama_model", {"host": standin.url, **args})


def test_present_pulls_once_then_changes_nothing(standin):
    first = call(standin, name="llama3.1:8b")
    assert first["changed"] is True
    assert first["model"] == "llama3.1:8b" and len(first["digest"]) == 64
    assert first["size"] > 1_000_000 and first["loaded"] is False
    again = call(standin, name="llama3.1:8b")
    assert again["changed"] is False and again["digest"] == first["digest"]


def test_check_mode_reports_the_change_and_makes_none(standin):
    planned = run_module(
        "gpufleet.fleet.ollama_model", {"host": standin.url, "name": "qwen2.5:7b"}, check=True
    )
    assert planned["changed"] is True
    assert planned["diff"] == {
        "before": {"model": "qwen2.5:7b", "state": "absent"},
        "after": {"model": "qwen2.5:7b", "state": "present"},
    }
    assert call(standin, name="qwen2.5:7b", state="absent")["changed"] is False


def test_loaded_warms_the_model_and_absent_removes_it(standin):
    warmed = call(standin, name="llama3.1:8b", state="loaded", keep_alive="-1")
    assert warmed["changed"] is True and warmed["loaded"] is True
    assert call(standin, name="llama3.1:8b", state="loaded")["changed"] is False
    removed = call(standin, name="llama3.1:8b", state="absent")
    assert removed["changed"] is True and removed["loaded"] is False and removed["size"] == 0
    assert call(standin, name="llama3.1:8b", state="absent")["changed"] is False


def test_copy_of_makes_an_alias_points_it_again_and_loads_once_for_both_names(standin):
    call(standin, name="llama3.1:8b", state="loaded")
    alias = call(standin, name="chat", copy_of="llama3.1:8b", state="loaded")
    llama = call(standin, name="llama3.1:8b")
    assert alias["changed"] is True and alias["model"] == "chat:latest"
    assert alias["digest"] == llama["digest"] and alias["loaded"] is True
    assert call(standin, name="chat", copy_of="llama3.1:8b")["changed"] is False
    # Ollama loads the model once for all its names, under the name first asked for.
    loaded = ollama.Client(host=standin.url).ps().models
    assert [m.model for m in loaded] == ["llama3.1:8b"]

    call(standin, name="qwen2.5:7b")
    planned = run_module(
        "gpufleet.fleet.ollama_model",
        {"host": standin.url, "name": "chat", "copy_of": "qwen2.5:7b"},
        check=True,
    )
    assert planned["changed"] is True and planned["digest"] == llama["digest"]
    moved = call(standin, name="chat", copy_of="qwen2.5:7b")
    qwen = call(standin, name="qwen2.5:7b")
    assert moved["changed"] is True and moved["digest"] == qwen["digest"]
    assert call(standin, name="llama3.1:8b")["changed"] is False, "the source stays"


def test_copy_of_a_model_not_on_the_server_fails_naming_it(standin):
    result = call(standin, name="chat", copy_of="mistral:7b")
    assert result.get("failed") is True and result["changed"] is False
    assert result["msg"] == "ollama_model chat:latest: copy_of mistral:7b is not on the server"
    assert "chat:latest" not in {m.model for m in ollama.Client(host=standin.url).list().models}


def test_a_name_without_tag_means_latest(standin):
    result = call(standin, name="nomic-embed-text")
    assert result["model"] == "nomic-embed-text:latest" and result["changed"] is True


def test_unknown_model_fails_naming_it_and_leaves_nothing(standin):
    result = call(standin, name="no-such-model:1b")
    assert result.get("failed") is True
    assert result["msg"] == (
        f"ollama_model no-such-model:1b: POST {standin.url}/api/pull: pulling no-such-model:1b "
        "failed: pull model manifest: file does not exist"
    )
    assert not list((standin.models / "blobs").iterdir())


def test_a_corrupt_download_fails_and_leaves_nothing(standin):
    result = call(standin, name="mistral:7b")
    assert result.get("failed") is True
    assert "digest mismatch" in result["msg"]
    assert not list((standin.models / "blobs").iterdir())


def test_an_unreachable_server_is_named():
    result = run_module(
        "gpufleet.fleet.ollama_model", {"host": "127.0.0.1:9", "name": "llama3.1:8b"}
    )
    assert result.get("failed") is True
    assert result["msg"].startswith(
        "ollama_model llama3.1:8b: GET http://127.0.0.1:9/api/tags: no answer from Ollama"
    )
    assert result["changed"] is False


@pytest.mark.parametrize("host", ["127.0.0.1:99999", "http://[::1", "ftp://10.0.0.1", ":11434"])
def test_a_host_that_is_not_an_address_is_named(host):
    result = run_module("gpufleet.fleet.ollama_model", {"host": host, "name": "llama3.1:8b"})
    assert result.get("failed") is True
    assert result["msg"] == (
        f"ollama_model llama3.1:8b: host {host!r} is neither host:port nor an http(s) URL"
    )


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        (Reply(b"<html>502 Bad Gateway</html>", content_type="text/html"), "is not JSON"),
        (Reply(b'{"models": "none"}'), "'models' is not a list of named models"),
        (Reply(b'["llama3.1:8b"]'), "expected a JSON object"),
        (Reply(b'{"error": "unauthorized"}', status=401), "HTTP 401: unauthorized"),
    ],
)
def test_an_answer_that_is_not_ollamas_is_named_with_its_endpoint(tags, named):
    with canned_http({"/api/tags": tags}) as url:
        result = run_module("gpufleet.fleet.ollama_model", {"host": url, "name": "llama3.1:8b"})
    assert result.get("failed") is True
    assert result["msg"].startswith(f"ollama_model llama3.1:8b: GET {url}/api/tags: ")
    assert named in result["msg"]
    assert "Traceback" not in result.get("module_stderr", "")


def test_timeout_applies_to_every_call():
    """Listing the models, not only a pull, gives up after timeout seconds."""
    slow = Reply(b'{"models": []}', delay=60)
    with canned_http({"/api/tags": slow, "/api/ps": slow}) as url:
        started = time.monotonic()
        result = run_module(
            "gpufleet.fleet.ollama_model", {"host": url, "name": "llama3.1:8b", "timeout": 1}
        )
        elapsed = time.monotonic() - started
    assert result.get("failed") is True
    assert result["msg"].startswith(f"ollama_model llama3.1:8b: GET {url}/api/tags: ")
    assert "timed out" in result["msg"]
    assert elapsed < 30


def test_keep_alive_minus_one_is_sent_as_the_number_ollama_reads(standin):
    """Ollama parses a keep_alive string with Go's time.ParseDuration, which refuses "-1"."""
    call(standin, name="llama3.1:8b", state="loaded", keep_alive="-1")
    (running,) = ollama.Client(host=standin.url).ps().models
    assert running.expires_at.year > 2100


def test_keep_alive_with_units_is_sent_as_a_duration(standin):
    call(standin, name="llama3.1:8b", state="loaded", keep_alive="10m")
    (running,) = ollama.Client(host=standin.url).ps().models
    assert 0 < (running.expires_at.timestamp() - time.time()) <= 600


@pytest.mark.parametrize("keep_alive", ["5 minutes", "10x", "1h30"])
def test_a_keep_alive_ollama_would_refuse_is_refused_first(standin, keep_alive):
    result = call(standin, name="llama3.1:8b", state="loaded", keep_alive=keep_alive)
    assert result.get("failed") is True and result["changed"] is False
    assert result["msg"].startswith(f"ollama_model llama3.1:8b: keep_alive {keep_alive!r} is")
    assert not ollama.Client(host=standin.url).list().models


def test_a_failed_load_after_a_pull_reports_the_change(tmp_path, registry):
    """A full queue (Ollama's 503) refuses the load; the pull before it did change the host."""
    busy = start_standin(tmp_path / "models", registry, OLLAMA_MAX_QUEUE="0")
    try:
        result = call(busy, name="llama3.1:8b", state="loaded")
        assert result.get("failed") is True
        assert result["changed"] is True
        assert "POST " in result["msg"] and "/api/generate: HTTP 503" in result["msg"]
        assert [m.model for m in ollama.Client(host=busy.url).list().models] == ["llama3.1:8b"]
    finally:
        busy.stop()
