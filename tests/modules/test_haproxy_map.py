"""haproxy_map against a real HAProxy on loopback: live map changes, idempotence, failures."""

import urllib.request

import pytest
from ansible_run import run_module
from running_haproxy import ADMIN_AND_HTTP, free_port, running_haproxy

CONFIG = (
    ADMIN_AND_HTTP
    + """
frontend routes
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain \
        lf-string "%[url_param(model),map({map},none)]"
"""
)


@pytest.fixture
def haproxy(tmp_path):
    admin, routes = tmp_path / "admin.sock", tmp_path / "models.map"
    routes.write_text("llama3.1:8b be_llama\nold:1b be_old\n")
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(socket=admin, map=routes, port=port))
    with running_haproxy(config, admin):
        yield {"socket": str(admin), "map": str(routes), "port": port}


def routed(haproxy, model):
    """Where the running HAProxy sends a request for model, by its map."""
    url = f"http://127.0.0.1:{haproxy['port']}/?model={model}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def call(haproxy, entries, check=False, **extra):
    args = {"map": haproxy["map"], "socket": haproxy["socket"], "entries": entries, **extra}
    return run_module("gpufleet.fleet.haproxy_map", args, check=check)


WANTED = {"llama3.1:8b": "be_llama_new", "qwen2.5:7b": "be_qwen"}


def test_adds_changes_and_deletes_then_changes_nothing(haproxy):
    first = call(haproxy, WANTED)
    assert first["changed"] is True, first
    assert (first["added"], first["updated"], first["deleted"]) == (
        ["qwen2.5:7b"],
        ["llama3.1:8b"],
        ["old:1b"],
    )
    assert [routed(haproxy, m) for m in ("llama3.1:8b", "qwen2.5:7b", "old:1b")] == [
        "be_llama_new",
        "be_qwen",
        "none",
    ]
    again = call(haproxy, WANTED)
    assert again["changed"] is False and again["loaded"] is True


def test_check_mode_reports_and_changes_nothing(haproxy):
    planned = call(haproxy, WANTED, check=True)
    assert planned["changed"] is True
    assert planned["diff"]["before"] == "llama3.1:8b be_llama\nold:1b be_old\n"
    assert call(haproxy, {"llama3.1:8b": "be_llama", "old:1b": "be_old"})["changed"] is False


def test_a_map_the_process_has_not_loaded_is_left_to_the_next_reload(haproxy, tmp_path):
    other = str(tmp_path / "other.map")
    assert call(haproxy, WANTED, map=other)["loaded"] is False
    refused = call(haproxy, WANTED, map=other, missing_ok=False)
    assert refused.get("failed") and "Unknown map" in refused["msg"], refused


def test_entries_with_spaces_are_refused_by_name(haproxy):
    refused = call(haproxy, {"bad model": "be_x"})
    assert refused.get("failed") and "bad model" in refused["msg"]


def test_a_missing_socket_names_the_socket(haproxy, tmp_path):
    refused = call(haproxy, WANTED, socket=str(tmp_path / "none.sock"))
    assert refused.get("failed") and "none.sock" in refused["msg"]
