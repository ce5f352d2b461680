"""ollama_model against the Ollama stand-in: idempotent, check mode, diff, clear failures."""

from ansible_run import run_module


def call(standin, **args):
    return run_module("ollama_model", {"host": standin.url, **args})


def test_present_pulls_once_then_changes_nothing(standin):
    first = call(standin, name="llama3.1:8b")
    assert first["changed"] is True
    assert first["model"] == "llama3.1:8b" and len(first["digest"]) == 64
    assert first["size"] > 1_000_000 and first["loaded"] is False
    again = call(standin, name="llama3.1:8b")
    assert again["changed"] is False and again["digest"] == first["digest"]


def test_check_mode_reports_the_change_and_makes_none(standin):
    planned = run_module("ollama_model", {"host": standin.url, "name": "qwen2.5:7b"}, check=True)
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


def test_a_name_without_tag_means_latest(standin):
    result = call(standin, name="nomic-embed-text")
    assert result["model"] == "nomic-embed-text:latest" and result["changed"] is True


def test_unknown_model_fails_naming_it_and_leaves_nothing(standin):
    result = call(standin, name="no-such-model:1b")
    assert result.get("failed") is True
    assert result["msg"] == (
        "ollama_model no-such-model:1b: pulling no-such-model:1b failed: "
        "pull model manifest: file does not exist"
    )
    assert not list((standin.models / "blobs").iterdir())


def test_a_corrupt_download_fails_and_leaves_nothing(standin):
    result = call(standin, name="mistral:7b")
    assert result.get("failed") is True
    assert "digest mismatch" in result["msg"]
    assert not list((standin.models / "blobs").iterdir())


def test_an_unreachable_server_is_named():
    result = run_module("ollama_model", {"host": "127.0.0.1:9", "name": "llama3.1:8b"})
    assert result.get("failed") is True
    assert result["msg"].startswith(
        "ollama_model llama3.1:8b: cannot reach Ollama at http://127.0.0.1:9"
    )
