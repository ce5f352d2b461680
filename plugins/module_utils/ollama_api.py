"""A small client for Ollama's HTTP API, shared by gpufleet's modules.

Follows Ollama's API documentation: /api/tags, /api/ps, /api/show, /api/pull
(streamed status lines), /api/delete, and /api/generate with an empty prompt to
load a model.
"""

from __future__ import annotations

import json
from typing import Any

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

DEFAULT_TAG = "latest"


class OllamaError(Exception):
    """A failure with a message that names what failed."""


def full_name(name: str) -> str:
    """`llama3.1` -> `llama3.1:latest`, as Ollama lists it."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:{DEFAULT_TAG}"


class OllamaClient:
    def __init__(self, base_url: str, timeout: int = 60) -> None:
        base = base_url if "://" in base_url else f"http://{base_url}"
        self.base_url = base.rstrip("/")
        self.timeout = timeout

    def _open(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        timeout: int | None = None,
    ) -> Any:
        data = json.dumps(body) if body is not None else None
        try:
            return open_url(
                self.base_url + path,
                data=data,
                method=method,
                headers={"Content-Type": "application/json"},
                timeout=timeout or self.timeout,
            )
        except HTTPError as exc:
            raise OllamaError(self._error_text(exc)) from None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OllamaError(f"cannot reach Ollama at {self.base_url}: {reason}") from None

    @staticmethod
    def _error_text(exc: HTTPError) -> str:
        try:
            return json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            return f"HTTP {exc.code} {exc.reason}"

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self._open(method, path, body)
        payload = response.read()
        return json.loads(payload) if payload else {}

    def local_models(self) -> dict[str, dict]:
        return {m["name"]: m for m in self._json("GET", "/api/tags").get("models", [])}

    def loaded_models(self) -> dict[str, dict]:
        return {m["name"]: m for m in self._json("GET", "/api/ps").get("models", [])}

    def pull(self, name: str, insecure: bool, timeout: int) -> None:
        """Pull and read the status stream to its end; an `error` line fails the pull."""
        response = self._open(
            "POST", "/api/pull", {"model": name, "insecure": insecure, "stream": True}, timeout
        )
        last = {}
        for line in response:
            if not line.strip():
                continue
            last = json.loads(line)
            if "error" in last:
                raise OllamaError(f"pulling {name} failed: {last['error']}")
        if last.get("status") != "success":
            raise OllamaError(f"pulling {name} ended without success: {last}")

    def delete(self, name: str) -> None:
        self._open("DELETE", "/api/delete", {"model": name}).read()

    def load(self, name: str, keep_alive: str | int, timeout: int) -> None:
        body = {"model": name, "prompt": "", "keep_alive": keep_alive, "stream": False}
        self._open("POST", "/api/generate", body, timeout).read()
