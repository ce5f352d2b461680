"""haproxy_stat against a real HAProxy on loopback: show stat's rows by type and proxy, a
stick table's entries, check mode, and a missing socket."""

import urllib.request

import pytest
from ansible_run import run_module
from running_haproxy import ADMIN_AND_HTTP, free_port, running_haproxy

CONFIG = (
    ADMIN_AND_HTTP
    + """
frontend front
    bind 127.0.0.1:{port}
    http-request track-sc0 url_param(model) table st_names
    http-request return status 200 content-type text/plain string ok
backend st_names
    stick-table type string len 64 size 100 store http_req_cnt
backend be_one
    server gpu-1 127.0.0.1:9 disabled
    server gpu-2 127.0.0.1:9 disabled
"""
)


@pytest.fixture
def haproxy(tmp_path):
    admin, port = tmp_path / "admin.sock", free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(socket=admin, port=port))
    with running_haproxy(config, admin):
        yield {"socket": str(admin), "port": port}


def test_rows_of_the_asked_types_and_proxies(haproxy):
    everything = run_module("gpufleet.fleet.haproxy_stat", {"socket": haproxy["socket"]})
    assert everything["changed"] is False
    assert {(r["pxname"], r["svname"]) for r in everything["rows"]} >= {
        ("front", "FRONTEND"),
        ("be_one", "gpu-1"),
        ("be_one", "BACKEND"),
    }
    servers = run_module(
        "gpufleet.fleet.haproxy_stat", {"socket": haproxy["socket"], "types": ["server"]}
    )
    assert [(r["pxname"], r["svname"], r["status"]) for r in servers["rows"]] == [
        ("be_one", "gpu-1", "MAINT"),
        ("be_one", "gpu-2", "MAINT"),
    ]
    front = run_module(
        "gpufleet.fleet.haproxy_stat", {"socket": haproxy["socket"], "proxies": ["front"]}
    )
    assert [r["svname"] for r in front["rows"]] == ["FRONTEND"]
    # An empty list, as a play may compute one, reads none, not all.
    none = run_module("gpufleet.fleet.haproxy_stat", {"socket": haproxy["socket"], "proxies": []})
    assert none["rows"] == []


def test_a_stick_tables_entries_and_check_mode_alike(haproxy):
    for model in ("chat", "chat", "embed"):
        url = f"http://127.0.0.1:{haproxy['port']}/?model={model}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200
    args = {"socket": haproxy["socket"], "types": ["frontend"], "tables": ["st_names"]}
    read = run_module("gpufleet.fleet.haproxy_stat", args)
    assert read["tables"]["st_names"]["chat"]["http_req_cnt"] == "2"
    assert read["tables"]["st_names"]["embed"]["http_req_cnt"] == "1"
    assert read["rows"][0]["hrsp_2xx"] == "3"
    checked = run_module("gpufleet.fleet.haproxy_stat", args, check=True)
    assert (checked["changed"], checked["tables"]) == (False, read["tables"])


def test_a_missing_socket_or_table_is_named(haproxy, tmp_path):
    gone = str(tmp_path / "nothing.sock")
    result = run_module("gpufleet.fleet.haproxy_stat", {"socket": gone})
    assert result["failed"] is True
    assert result["msg"].startswith(f"haproxy_stat: HAProxy's runtime API at {gone}:")
    result = run_module(
        "gpufleet.fleet.haproxy_stat", {"socket": haproxy["socket"], "tables": ["st_nosuch"]}
    )
    assert result["failed"] is True
    assert "st_nosuch" in result["msg"], result["msg"]
