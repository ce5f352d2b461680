"""What Ollama's native API and its OpenAI-compatible API share: their error, and the
stand-in's token counts and embeddings."""

from __future__ import annotations

import hashlib
import math

EMBEDDING_DIMENSIONS = 32


class ApiError(Exception):
    """An error answered with this status; each API words it in its own shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def prompt_tokens(prompt: str) -> int:
    """The stand-in counts a prompt's words as its tokens, at least one."""
    return max(1, len(prompt.split()))


def embedding(text: str) -> list[float]:
    """A unit vector derived from the text: the same text, the same vector."""
    raw = hashlib.sha256(text.encode()).digest()
    values = [(byte - 127.5) / 127.5 for byte in raw[:EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 8) for v in values]
