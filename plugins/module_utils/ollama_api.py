"""A small client for Ollama's HTTP API, shared by gpufleet's modules.

Follows Ollama's API documentation: /api/tags, /api/ps, /api/pull (streamed status
lines), /api/delete, and /api/generate with an empty prompt to load a model. Every
failure, whatever its kind (no answer, an HTTP error, a body that is not JSON or not of
the documented shape), is an OllamaError whose message names the endpoint.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

# Go's time.ParseDuration, which Ollama applies to a keep_alive string: every number
# carries a unit ("-1" has none and is refused); "0" alone is the one exception.
GO_DURATION = re.compile(r"[+-]?(0|((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")
SECONDS = re.compile(r"[+-]?\d+")


class OllamaError(Exception):
    """A failure with a message that names what failed."""


def keep_alive_value(text: str) -> int | str:
    """keep_alive as Ollama's API reads it: a JSON number is seconds (negative: for ever), a
    string is a Go duration such as 5m or 1h30m."""
    value = text.strip()
    if SECONDS.fullmatch(value):
        return int(value)
    if GO_DURATION.fullmatch(value):
        return value
    raise OllamaError(
        f"keep_alive {text!r} is neither a number of seconds (-1: for ever) nor a duration "
        "with units, such as 5m or 1h30m"
    )


def base_url(host: str) -> str:
    """host:port or an http(s) URL, as a base URL; anything else is refused by name."""
    url = host if "://" in host else f"http://{host}"
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        valid = valid and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number, or out of range
        valid = False
    if not valid:
        raise OllamaError(f"host {host!r} is neither host:port nor an http(s) URL")
    return url.rstrip("/")


class OllamaClient:
    def __init__(self, host: str, timeout: int = 60) -> None:
        self.base_url = base_url(host)
        self.timeout = timeout

    @contextlib.contextmanager
    def _failures(self, method: str, path: str) -> Iterator[None]:
        """Turn whatever a call or its answer raises into one line naming the endpoint."""
        endpoint = f"{method} {self.base_url}{path}"
        try:
            yield
        except OllamaError as exc:
            raise OllamaError(f"{endpoint}: {exc}") from None
        except HTTPError as exc:
            raise OllamaError(f"{endpoint}: {self._error_text(exc)}") from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise OllamaError(f"{endpoint}: no answer from Ollama: {reason}") from None
        except ValueError as exc:
            raise OllamaError(f"{endpoint}: the answer is not JSON: {exc}") from None

    @staticmethod
    def _error_text(exc: HTTPError) -> str:
        try:
            body = json.loads(exc.read())
        except (ValueError, OSError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return f"HTTP {exc.code}: {body['error']}"
        return f"HTTP {exc.code} {exc.reason}"

    def _open(self, method: str, path: str, body: dict | None = None) -> Any:
        return open_url(
            self.base_url + path,
            data=json.dumps(body) if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
            timeout=self.timeout,
        )

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        with self._failures(method, path):
            payload = self._open(method, path, body).read()
            answer = json.loads(payload) if payload.strip() else {}
            if not isinstance(answer, dict):
                raise OllamaError(f"expected a JSON object, got {payload[:80]!r}")
            return answer

    def _models(self, path: str) -> dict[str, dict]:
        answer = self._json("GET", path)
        with self._failures("GET", path):
            models = answer.get("models") or []
            if not isinstance(models, list) or not all(
                isinstance(m, dict) and isinstance(m.get("name"), str) for m in models
            ):
                raise OllamaError(f"'models' is not a list of named models: {models!r:.120}")
            return {m["name"]: m for m in models}

    def local_models(self) -> dict[str, dict]:
        return self._models("/api/tags")

    def loaded_models(self) -> dict[str, dict]:
        return self._models("/api/ps")

    def pull(self, name: str, insecure: bool) -> None:
        """Pull and read the status stream to its end; an `error` line fails the pull."""
        body = {"model": name, "insecure": insecure, "stream": True}
        with self._failures("POST", "/api/pull"):
            last: Any = {}
            for line in self._open("POST", "/api/pull", body):
                if not line.strip():
                    continue
                last = json.loads(line)
                if not isinstance(last, dict):
                    raise OllamaError(f"a status line is not a JSON object: {line[:80]!r}")
                if "error" in last:
                    raise OllamaError(f"pulling {name} failed: {last['error']}")
            if last.get("status") != "success":
                raise OllamaError(f"pulling {name} ended without success: {last}")

    def copy(self, source: str, destination: str) -> None:
        """Another name for a model (POST /api/copy): Ollama writes a second manifest with
        the same layers; nothing is downloaded or duplicated."""
        with self._failures("POST", "/api/copy"):
            self._open("POST", "/api/copy", {"source": source, "destination": destination}).read()

    def delete(self, name: str) -> None:
        with self._failures("DELETE", "/api/delete"):
            self._open("DELETE", "/api/delete", {"model": name}).read()

    def load(self, name: str, keep_alive: int | str) -> None:
        """Load a model by asking it to generate from an empty prompt, as Ollama documents."""
        body = {"model": name, "prompt": "", "keep_alive": keep_alive, "stream": False}
        answer = self._json("POST", "/api/generate", body)
        if answer.get("done") is not True:
            raise OllamaError(f"POST {self.base_url}/api/generate: loading {name}: {answer}")
