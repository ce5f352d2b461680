"""Ollama's model store: manifests/<host>/<namespace>/<model>/<tag> and blobs/sha256-<hex>."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .names import ModelName

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PARTIAL_SUFFIX = "-partial"


class DigestMismatch(Exception):
    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")


@dataclass(frozen=True)
class LocalModel:
    name: ModelName
    manifest: dict
    manifest_digest: str
    modified: float

    @property
    def layers(self) -> list[dict]:
        return [self.manifest["config"], *self.manifest["layers"]]

    @property
    def size(self) -> int:
        return sum(int(layer["size"]) for layer in self.layers)

    def layer(self, media_type: str) -> dict | None:
        return next((x for x in self.manifest["layers"] if x["mediaType"] == media_type), None)


def default_models_dir() -> Path:
    configured = os.environ.get("OLLAMA_MODELS")
    return Path(configured) if configured else Path.home() / ".ollama" / "models"


def rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp).astimezone()
    return moment.isoformat(timespec="microseconds")


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifests = root / "manifests"
        self.blobs = root / "blobs"

    def ensure(self) -> None:
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.blobs.mkdir(parents=True, exist_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-", 1)

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.manifest_parts)

    def get(self, name: ModelName) -> LocalModel | None:
        path = self.manifest_path(name)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        return LocalModel(
            name, json.loads(raw), hashlib.sha256(raw).hexdigest(), path.stat().st_mtime
        )

    def models(self) -> Iterator[LocalModel]:
        if not self.manifests.exists():
            return
        for path in sorted(self.manifests.glob("*/*/*/*")):
            if path.is_file():
                host, namespace, model, tag = path.relative_to(self.manifests).parts
                found = self.get(ModelName(host, namespace, model, tag))
                if found is not None:
                    yield found

    def read_json_blob(self, digest: str) -> dict:
        return json.loads(self.blob_path(digest).read_bytes())

    def write_manifest(self, name: ModelName, manifest_bytes: bytes) -> None:
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + PARTIAL_SUFFIX)
        temporary.write_bytes(manifest_bytes)
        temporary.replace(path)

    def delete_manifest(self, name: ModelName) -> bool:
        path = self.manifest_path(name)
        if not path.exists():
            return False
        path.unlink()
        for parent in list(path.parents)[:3]:
            if parent != self.manifests and not any(parent.iterdir()):
                parent.rmdir()
        return True

    def referenced_digests(self) -> set[str]:
        return {layer["digest"] for model in self.models() for layer in model.layers}

    def prune(self) -> list[str]:
        """Remove blobs no manifest refers to, and leftover partial downloads."""
        if not self.blobs.exists():
            return []
        keep = {d.replace(":", "-", 1) for d in self.referenced_digests()}
        removed = []
        for blob in self.blobs.iterdir():
            if blob.name not in keep:
                blob.unlink()
                removed.append(blob.name)
        return removed


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return "sha256:" + digest.hexdigest()
