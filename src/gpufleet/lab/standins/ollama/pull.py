"""Pulling a model from a registry into the store, with Ollama's progress lines.

Blobs download to `sha256-<hex>-partial`, are verified as they arrive and renamed
only when their digest matches; the manifest is written last. A failed pull
leaves no partial file and no blob that only it referenced.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .names import DEFAULT_HOST, ModelName
from .store import MANIFEST_MEDIA_TYPE, PARTIAL_SUFFIX, DigestMismatch, Store

CHUNK = 1 << 20
PROGRESS_EVERY = 16 << 20
Emit = Callable[[dict], None]


class PullError(Exception):
    pass


def registry_base(name: ModelName, insecure: bool, default_registry: str) -> str:
    if name.host == DEFAULT_HOST:
        return default_registry.rstrip("/")
    return ("http://" if insecure else "https://") + name.host


def _open(url: str, accept: str | None = None) -> object:
    """Open an http(s) registry URL; registry_base() never yields another scheme."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    return urllib.request.urlopen(request, timeout=60)


def fetch_manifest(base: str, name: ModelName) -> bytes:
    url = f"{base}/v2/{name.namespace}/{name.model}/manifests/{name.tag}"
    try:
        with _open(url, MANIFEST_MEDIA_TYPE) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise PullError("pull model manifest: file does not exist") from None
        raise PullError(f"pull model manifest: {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PullError(f"pull model manifest: {getattr(exc, 'reason', exc)}") from None


def download_blob(base: str, name: ModelName, layer: dict, target: Path, emit: Emit) -> None:
    digest, total = layer["digest"], int(layer["size"])
    status = f"pulling {digest.split(':', 1)[1][:12]}"
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    url = f"{base}/v2/{name.namespace}/{name.model}/blobs/{digest}"
    hasher, completed, reported = hashlib.sha256(), 0, 0
    emit({"status": status, "digest": digest, "total": total})
    try:
        with _open(url) as response, partial.open("wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                hasher.update(block)
                completed += len(block)
                if completed - reported >= PROGRESS_EVERY:
                    reported = completed
                    emit(
                        {"status": status, "digest": digest, "total": total, "completed": completed}
                    )
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            raise DigestMismatch(digest, got)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise PullError(f"download failed: {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise PullError(f"download failed: {getattr(exc, 'reason', exc)}") from None
    except DigestMismatch:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    emit({"status": status, "digest": digest, "total": total, "completed": total})


def pull(
    store: Store, name: ModelName, insecure: bool, default_registry: str, noprune: bool, emit: Emit
) -> None:
    store.ensure()
    emit({"status": "pulling manifest"})
    base = registry_base(name, insecure, default_registry)
    manifest_bytes = fetch_manifest(base, name)
    manifest = json.loads(manifest_bytes)
    layers = [*manifest["layers"], manifest["config"]]
    already_there = {
        layer["digest"] for layer in layers if store.blob_path(layer["digest"]).exists()
    }
    try:
        for layer in layers:
            target = store.blob_path(layer["digest"])
            if layer["digest"] in already_there:
                size = int(layer["size"])
                emit(
                    {
                        "status": f"pulling {layer['digest'].split(':', 1)[1][:12]}",
                        "digest": layer["digest"],
                        "total": size,
                        "completed": size,
                    }
                )
                continue
            download_blob(base, name, layer, target, emit)
        emit({"status": "verifying sha256 digest"})
    except BaseException:
        _forget_new_blobs(store, layers, already_there)
        raise
    emit({"status": "writing manifest"})
    previous = store.get(name)
    store.write_manifest(name, manifest_bytes)
    if previous is not None and not noprune:
        emit({"status": "removing any unused layers"})
        _remove_unreferenced(store, previous.layers)
    emit({"status": "success"})


def _forget_new_blobs(store: Store, layers: list[dict], already_there: set[str]) -> None:
    referenced = store.referenced_digests()
    for layer in layers:
        digest = layer["digest"]
        if digest not in already_there and digest not in referenced:
            store.blob_path(digest).unlink(missing_ok=True)


def _remove_unreferenced(store: Store, layers: list[dict]) -> None:
    referenced = store.referenced_digests()
    for layer in layers:
        if layer["digest"] not in referenced:
            store.blob_path(layer["digest"]).unlink(missing_ok=True)
