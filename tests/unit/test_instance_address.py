"""The boot-time code that finds the instance's private address (runtime/): IMDSv2 first, the
default route's interface next, and where neither answers, no file and one line why."""

import json
import socket

import pytest
import repo_scripts
from canned_http import Reply, canned_http

runtime = repo_scripts.load("runtime/gpufleet_instance_address.py")

TOKEN = Reply(b"a-session-token", content_type="text/plain")
ROUTE = [{"dst": "default", "gateway": "10.0.3.1", "dev": "ens5"}]
ADDRESSES = [{"ifname": "ens5", "addr_info": [{"local": "10.0.3.44", "scope": "global"}]}]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def default_route(monkeypatch):
    """What `ip -json` shows: a default route by ens5, which has 10.0.3.44."""
    answers = {
        ("route", "show", "default"): ROUTE,
        ("-4", "address", "show", "dev", "ens5"): ADDRESSES,
    }
    monkeypatch.setattr(runtime, "ip_json", lambda *arguments: answers[arguments])
    return answers


def run(tmp_path, capsys, *arguments):
    output = tmp_path / "run" / "instance-address.env"
    status = runtime.main([*arguments, "--output", str(output), "--imds-pause", "0"])
    captured = capsys.readouterr()
    return status, output, captured


def test_imds_local_ipv4_is_the_address_and_is_written_for_systemd(tmp_path, capsys):
    replies = {
        runtime.TOKEN_PATH: TOKEN,
        runtime.ADDRESS_PATH: Reply(b"10.0.7.21", content_type="text/plain"),
    }
    with canned_http(replies) as imds:
        status, output, captured = run(tmp_path, capsys, "--imds", imds)
    assert status == 0
    assert "GPUFLEET_INSTANCE_ADDRESS=10.0.7.21\n" in output.read_text()
    assert (
        captured.out == f"private address 10.0.7.21 (from IMDS local-ipv4), written to {output}\n"
    )


def test_without_imds_the_default_routes_interface_gives_it(tmp_path, capsys, default_route):
    status, output, captured = run(
        tmp_path, capsys, "--imds", closed_port_url(), "--imds-attempts", "2"
    )
    assert status == 0
    assert "GPUFLEET_INSTANCE_ADDRESS=10.0.3.44\n" in output.read_text()
    assert "(from the default route's interface)" in captured.out


def test_no_address_leaves_no_file_and_says_why_in_one_line(tmp_path, capsys, default_route):
    default_route[("route", "show", "default")] = []
    stale = tmp_path / "run" / "instance-address.env"
    stale.parent.mkdir()
    stale.write_text("GPUFLEET_INSTANCE_ADDRESS=10.9.9.9\n")
    imds = closed_port_url()
    status, output, captured = run(tmp_path, capsys, "--imds", imds, "--imds-attempts", "2")
    assert status == 1
    assert not output.exists()
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "no private address found, so the services that bind it stay stopped:"
    )
    assert f"IMDS at {imds} did not answer" in lines[0] and "there is no default route" in lines[0]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"<html>proxy</html>", "not an IPv4 address"),
        (b"127.0.0.1", "which no other host can reach"),
    ],
)
def test_an_answer_that_is_not_a_reachable_address_is_refused_naming_it(
    tmp_path, capsys, default_route, body, named
):
    default_route[("route", "show", "default")] = []
    replies = {
        runtime.TOKEN_PATH: TOKEN,
        runtime.ADDRESS_PATH: Reply(body, content_type="text/plain"),
    }
    with canned_http(replies) as imds:
        status, _output, captured = run(tmp_path, capsys, "--imds", imds, "--imds-attempts", "1")
    assert status == 1
    assert named in captured.err


def test_imds_without_a_token_is_not_asked_as_imdsv1(tmp_path, capsys, default_route):
    """A token refused (IMDSv2 required, hop limit) falls through to the route, never to v1."""
    replies = {
        runtime.TOKEN_PATH: Reply(b"", status=403),
        runtime.ADDRESS_PATH: Reply(b"10.0.7.21"),
    }
    with canned_http(replies) as imds:
        status, output, _captured = run(tmp_path, capsys, "--imds", imds, "--imds-attempts", "1")
    assert status == 0
    assert "10.0.3.44" in output.read_text()


def test_ip_json_reads_the_real_ip_command():
    """The parser against this machine's iproute2: a list of routes, JSON."""
    assert isinstance(runtime.ip_json("route", "show"), list)
    json.dumps(runtime.ip_json("-4", "address", "show"))
