"""Ollama model names: [host/][namespace/]model[:tag], with Ollama's defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[0-9]{1,5})?$")


class InvalidName(ValueError):
    pass


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        if not text or text != text.strip():
            raise InvalidName(text)
        rest, tag = text, DEFAULT_TAG
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = text.rsplit(":", 1)
        parts = rest.split("/")
        if len(parts) > 3:
            raise InvalidName(text)
        host = parts[-3] if len(parts) == 3 else DEFAULT_HOST
        namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
        model = parts[-1]
        if not (
            _HOST.match(host) and _PART.match(namespace) and _PART.match(model) and _PART.match(tag)
        ):
            raise InvalidName(text)
        return cls(host, namespace, model, tag)

    @property
    def display(self) -> str:
        """How Ollama shows the name: short for the default registry, full otherwise."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def manifest_parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)
