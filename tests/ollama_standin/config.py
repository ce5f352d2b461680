"""The environment Ollama honours, read the way Ollama reads it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ollama_standin.store import default_models_dir

DEFAULT_PORT = 11434
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_host(value: str | None) -> tuple[str, int]:
    """OLLAMA_HOST: host, host:port, :port or a URL; 127.0.0.1:11434 by default."""
    text = (value or "").strip()
    text = re.sub(r"^[a-z]+://", "", text).rstrip("/")
    if not text:
        return "127.0.0.1", DEFAULT_PORT
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    return host or "127.0.0.1", int(port) if port else DEFAULT_PORT


def parse_keep_alive(value: object) -> float | None:
    """A keep_alive in seconds; None means forever (any negative value, as in Ollama)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        negative = text.startswith("-")
        body = text.lstrip("+-")
        if re.fullmatch(r"\d+(\.\d+)?", body):
            seconds = float(body)
        elif body and "".join(m.group(0) for m in _DURATION_PART.finditer(body)) == body:
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(body))
        else:
            raise ValueError(f'time: invalid duration "{text}"')
        seconds = -seconds if negative else seconds
    return None if seconds < 0 else seconds


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    models: Path
    keep_alive: float | None
    num_parallel: int
    max_queue: int
    max_loaded_models: int
    noprune: bool
    registry: str
    tokens_per_second: float
    response_tokens: int

    @classmethod
    def from_environment(cls) -> Config:
        host, port = parse_host(os.environ.get("OLLAMA_HOST"))
        return cls(
            host=host,
            port=port,
            models=default_models_dir(),
            keep_alive=parse_keep_alive(os.environ.get("OLLAMA_KEEP_ALIVE") or "5m"),
            num_parallel=max(1, _int("OLLAMA_NUM_PARALLEL", 1)),
            max_queue=_int("OLLAMA_MAX_QUEUE", 512),
            max_loaded_models=max(1, _int("OLLAMA_MAX_LOADED_MODELS", 3)),
            noprune=bool(os.environ.get("OLLAMA_NOPRUNE")),
            registry=os.environ.get("OLLAMA_STANDIN_REGISTRY", "https://registry.ollama.ai"),
            tokens_per_second=float(os.environ.get("OLLAMA_STANDIN_TOKENS_PER_SECOND") or 20),
            response_tokens=_int("OLLAMA_STANDIN_RESPONSE_TOKENS", 24),
        )
