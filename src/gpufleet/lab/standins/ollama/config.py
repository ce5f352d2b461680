"""The environment Ollama honours, read the way Ollama reads it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .store import default_models_dir

DEFAULT_PORT = 11434
# Go's time.ParseDuration units; µ is written both ways, as Go accepts both.
GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")
_GO_UNIT = re.compile(r"[^\d.]*")
DEFAULT_KEEP_ALIVE = 300.0


def parse_host(value: str | None) -> tuple[str, int]:
    """OLLAMA_HOST: host, host:port, :port or a URL; 127.0.0.1:11434 by default."""
    text = (value or "").strip()
    text = re.sub(r"^[a-z]+://", "", text).rstrip("/")
    if not text:
        return "127.0.0.1", DEFAULT_PORT
    host, _colon, port = text.rpartition(":") if ":" in text else (text, "", "")
    return host or "127.0.0.1", int(port) if port else DEFAULT_PORT


def go_duration(text: str) -> float:
    """Seconds in text, read as Go's time.ParseDuration reads it, failing with its messages:
    every number needs a unit, so "-1" and "10" fail; "0" alone is allowed."""
    quoted = f'"{text}"'
    body = text[1:] if text[:1] in ("+", "-") else text
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"time: invalid duration {quoted}")
    seconds = 0.0
    while body:
        number = _GO_NUMBER.match(body)
        whole, fraction = number.group(1), number.group(2)
        if not whole and not fraction:
            raise ValueError(f"time: invalid duration {quoted}")
        body = body[number.end() :]
        unit = _GO_UNIT.match(body).group(0)
        body = body[len(unit) :]
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        seconds += float(f"{whole or 0}.{fraction or 0}") * GO_UNITS[unit]
    return sign * seconds


def _forever_if_negative(seconds: float) -> float | None:
    return None if seconds < 0 else seconds


def api_keep_alive(value: object) -> float | None:
    """A request's keep_alive, as Ollama's api.Duration unmarshals it: a number is whole
    seconds, a string a Go duration; negative means for ever (None). Anything else fails."""
    if isinstance(value, str):
        return _forever_if_negative(go_duration(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return None if value < 0 else float(int(value))
    go_types = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}
    raise ValueError(f"Unsupported type: '{go_types.get(type(value), type(value).__name__)}'")


def env_keep_alive(text: str | None) -> float | None:
    """OLLAMA_KEEP_ALIVE, as Ollama's envconfig reads it: a Go duration, else whole seconds,
    else the default of 5 minutes; negative means for ever (None)."""
    if not text:
        return DEFAULT_KEEP_ALIVE
    try:
        return _forever_if_negative(go_duration(text))
    except ValueError:
        pass
    try:
        return _forever_if_negative(float(int(text)))
    except ValueError:
        return DEFAULT_KEEP_ALIVE


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
            keep_alive=env_keep_alive(os.environ.get("OLLAMA_KEEP_ALIVE")),
            num_parallel=max(1, _int("OLLAMA_NUM_PARALLEL", 1)),
            max_queue=_int("OLLAMA_MAX_QUEUE", 512),
            max_loaded_models=max(1, _int("OLLAMA_MAX_LOADED_MODELS", 3)),
            noprune=bool(os.environ.get("OLLAMA_NOPRUNE")),
            registry=os.environ.get("OLLAMA_STANDIN_REGISTRY", "https://registry.ollama.ai"),
            tokens_per_second=float(os.environ.get("OLLAMA_STANDIN_TOKENS_PER_SECOND") or 20),
            response_tokens=_int("OLLAMA_STANDIN_RESPONSE_TOKENS", 24),
        )
