"""The `ollama` command: serve, pull, list, ps, rm, show, --version, as Ollama's CLI has them.

Client commands talk to the server at OLLAMA_HOST, as the real CLI does.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request

from . import STANDIN_NOTICE, VERSION
from .config import Config, parse_host
from .server import serve

USAGE = """Usage:
  ollama [flags]
  ollama [command]

Available Commands:
  serve       Start ollama
  show        Show information for a model
  pull        Pull a model from a registry
  list        List models
  ps          List running models
  rm          Remove a model

Flags:
  -v, --version   Show version information
"""


class ClientError(Exception):
    pass


def _base_url() -> str:
    host, port = parse_host(os.environ.get("OLLAMA_HOST"))
    host = "127.0.0.1" if host == "0.0.0.0" else host  # noqa: S104 - a client never dials 0.0.0.0
    return f"http://{host}:{port}"


def _call(method: str, path: str, body: dict | None = None) -> urllib.request.addinfourl:
    data = json.dumps(body).encode() if body is not None else None
    url = _base_url() + path  # always http://OLLAMA_HOST
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise ClientError(message) from None
    except urllib.error.URLError:
        raise ClientError("could not connect to ollama app, is it running?") from None


def _human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size} B"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def cmd_pull(name: str) -> None:
    with _call("POST", "/api/pull", {"model": name}) as response:
        for line in response:
            status = json.loads(line)
            if "error" in status:
                raise ClientError(status["error"])
            if status.get("total") and status.get("completed") is not None:
                percent = 100 * status["completed"] // status["total"]
                print(f"{status['status']}... {percent:3d}% {_human_size(status['total'])}")
            elif "completed" not in status:
                print(status["status"])


def cmd_list() -> None:
    with _call("GET", "/api/tags") as response:
        models = json.load(response)["models"]
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [
        [m["name"], m["digest"][:12], _human_size(m["size"]), m["modified_at"]] for m in models
    ]
    _table(rows)


def cmd_ps() -> None:
    with _call("GET", "/api/ps") as response:
        models = json.load(response)["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "UNTIL"]]
    rows += [
        [m["name"], m["digest"][:12], _human_size(m["size"]), "100% CPU", m["expires_at"]]
        for m in models
    ]
    _table(rows)


def cmd_rm(name: str) -> None:
    _call("DELETE", "/api/delete", {"model": name}).close()
    print(f"deleted '{name}'")


def cmd_show(name: str) -> None:
    with _call("POST", "/api/show", {"model": name}) as response:
        info = json.load(response)
    details = info["details"]
    print("  Model")
    print(f"    architecture        {details['family']}")
    print(f"    parameters          {details['parameter_size']}")
    print(f"    quantization        {details['quantization_level']}")
    print()
    print("  Capabilities")
    for capability in info.get("capabilities", []):
        print(f"    {capability}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    try:
        if command in ("-v", "--version"):
            print(f"ollama version is {VERSION}")
            print(f"Warning: this is the {STANDIN_NOTICE}")
        elif command == "serve":
            asyncio.run(serve(Config.from_environment()))
        elif command in ("pull", "rm", "show") and len(rest) == 1:
            {"pull": cmd_pull, "rm": cmd_rm, "show": cmd_show}[command](rest[0])
        elif command in ("list", "ls") and not rest:
            cmd_list()
        elif command == "ps" and not rest:
            cmd_ps()
        else:
            print(
                f"Error: unknown command or arguments {' '.join(args)!r}\n\n{USAGE}",
                file=sys.stderr,
            )
            return 1
    except ClientError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main_exit() -> None:
    """Entry point of the release's bin/ollama."""
    sys.exit(main())
