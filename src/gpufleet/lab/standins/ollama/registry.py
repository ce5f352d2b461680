"""A model registry for the lab, serving the paths Ollama pulls from.

    GET /v2/<namespace>/<model>/manifests/<tag>
    GET /v2/<namespace>/<model>/blobs/sha256:<hex>
    GET /files/<name>                      release archives and their checksums

Models are generated, deterministic and of any size: about 1 MB for unit tests,
hundreds of MB to GBs for hydration and swap benchmarks. They carry Ollama's
layers (model, template, params, license, config) and media types under familiar
names, so playbooks use the same model names in the lab as in production.

    python -m gpufleet.lab.standins.ollama.registry --listen 10.77.0.1:5000 --model llama3.1:8b=1MB
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from .names import ModelName
from .store import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MODEL_MEDIA_TYPE

BLOCK = 1 << 20
LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}"
    "<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
)
CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}"
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}"
    "<|im_end|>"
)
# name: (family, parameter size, quantization, template, stop tokens)
CATALOG: dict[str, tuple[str, str, str, str, list[str]]] = {
    "llama3.1:8b": ("llama", "8.0B", "Q4_K_M", LLAMA3_TEMPLATE, ["<|eot_id|>"]),
    "llama3.1:70b": ("llama", "70.6B", "Q4_K_M", LLAMA3_TEMPLATE, ["<|eot_id|>"]),
    "llama3.2:3b": ("llama", "3.2B", "Q4_K_M", LLAMA3_TEMPLATE, ["<|eot_id|>"]),
    "qwen2.5:7b": ("qwen2", "7.6B", "Q4_K_M", CHATML_TEMPLATE, ["<|im_end|>"]),
    "qwen2.5:0.5b": ("qwen2", "494.03M", "Q4_K_M", CHATML_TEMPLATE, ["<|im_end|>"]),
    "mistral:7b": ("llama", "7.2B", "Q4_0", "[INST] {{ .Prompt }} [/INST]", ["[INST]"]),
    "nomic-embed-text:latest": ("nomic-bert", "137M", "F16", "{{ .Prompt }}", []),
}
SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in {**SIZE_UNITS, "": 1}:
        raise ValueError(f"not a size: {text!r} (try 1MB, 500MiB, 4GB)")
    return int(float(match.group(1)) * SIZE_UNITS.get(match.group(2).upper(), 1))


@dataclass
class GeneratedModel:
    """One model: its weights are a deterministic byte stream of the asked size."""

    name: ModelName
    weights_size: int
    corrupt: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    weights_digest: str = ""
    manifest: bytes = b""

    def __post_init__(self) -> None:
        family, parameters, quantization, template, stop = CATALOG.get(
            f"{self.name.model}:{self.name.tag}", ("llama", "1B", "Q4_0", "{{ .Prompt }}", [])
        )
        self._block = _seeded_block(self.name.display)
        hasher = hashlib.sha256()
        for chunk in self.weights(as_served=False):
            hasher.update(chunk)
        self.weights_digest = "sha256:" + hasher.hexdigest()
        layers = [(MODEL_MEDIA_TYPE, self.weights_digest, self.weights_size)]
        for media_type, content in (
            ("application/vnd.ollama.image.template", template.encode()),
            ("application/vnd.ollama.image.license", b"Generated for the gpufleet lab.\n"),
            ("application/vnd.ollama.image.params", json.dumps({"stop": stop}).encode()),
        ):
            digest = _put(self.blobs, content)
            layers.append((media_type, digest, len(content)))
        config = json.dumps(
            {
                "model_format": "gguf",
                "model_family": family,
                "model_families": [family],
                "model_type": parameters,
                "file_type": quantization,
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [d for _m, d, _s in layers]},
            }
        ).encode()
        config_digest = _put(self.blobs, config)
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": {
                    "mediaType": CONFIG_MEDIA_TYPE,
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [{"mediaType": m, "digest": d, "size": s} for m, d, s in layers],
            }
        ).encode()

    def weights(self, as_served: bool = True) -> Iterator[bytes]:
        """GGUF magic, then 1 MiB blocks that differ by their index.

        A model marked corrupt is served with its first byte flipped, so it no longer
        matches the digest its manifest names.
        """
        remaining, index = self.weights_size, 0
        while remaining > 0:
            block = index.to_bytes(8, "little") + self._block[8:]
            if index == 0:
                block = b"GGUF\x03\x00\x00\x00" + block[8:]
            piece = block[: min(BLOCK, remaining)]
            if as_served and self.corrupt and index == 0:
                piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
            yield piece
            remaining -= len(piece)
            index += 1


def _seeded_block(seed: str) -> bytes:
    key = hashlib.sha256(seed.encode()).digest()
    return b"".join(
        hashlib.sha256(key + i.to_bytes(4, "little")).digest() for i in range(BLOCK // 32)
    )


def _put(blobs: dict[str, bytes], content: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    blobs[digest] = content
    return digest


class Registry:
    """The registry's models and files, served by `serve` on one address."""

    def __init__(
        self,
        models: dict[str, int],
        files: Path | None = None,
        corrupt: frozenset[str] = frozenset(),
    ) -> None:
        self.models: dict[tuple[str, str, str], GeneratedModel] = {}
        for text, size in models.items():
            name = ModelName.parse(text)
            model = GeneratedModel(name, size, corrupt=text in corrupt)
            self.models[(name.namespace, name.model, name.tag)] = model
        self.files = files.absolute() if files is not None else None
        self._server: ThreadingHTTPServer | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; return the base URL."""
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        bound_host, bound_port = self._server.server_address[:2]
        return f"http://{bound_host}:{bound_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _handler_for(registry: Registry) -> type[BaseHTTPRequestHandler]:
    manifest_path = re.compile(r"^/v2/([^/]+)/([^/]+)/manifests/([^/]+)$")
    blob_path = re.compile(r"^/v2/([^/]+)/([^/]+)/blobs/(sha256:[0-9a-f]{64})$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            return

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if match := manifest_path.match(path):
                model = registry.models.get(match.groups())
                if model is None:
                    self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                    return
                self._send(
                    model.manifest,
                    MANIFEST_MEDIA_TYPE,
                    {
                        "Docker-Content-Digest": "sha256:"
                        + hashlib.sha256(model.manifest).hexdigest()
                    },
                )
            elif match := blob_path.match(path):
                self._blob(*match.groups())
            elif path.startswith("/files/") and registry.files is not None:
                self._file(unquote(path.removeprefix("/files/")))
            else:
                self._error(404, "NAME_UNKNOWN", "repository name not known to registry")

        def _blob(self, namespace: str, model_name: str, digest: str) -> None:
            for model in registry.models.values():
                if (model.name.namespace, model.name.model) != (namespace, model_name):
                    continue
                if digest == model.weights_digest:
                    self._start_body(model.weights_size, "application/octet-stream")
                    for chunk in model.weights():
                        self.wfile.write(chunk)
                    return
                if digest in model.blobs:
                    self._send(model.blobs[digest], "application/octet-stream")
                    return
            self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")

        def _file(self, name: str) -> None:
            # Normalised, not resolved: links the lab puts under files/ are followed,
            # while `..` in a request still cannot leave the directory.
            target = Path(os.path.normpath(registry.files / name))
            if registry.files not in target.parents or not target.is_file():
                self._error(404, "NOT_FOUND", "no such file")
                return
            self._start_body(target.stat().st_size, "application/octet-stream")
            with target.open("rb") as body:
                shutil.copyfileobj(body, self.wfile)

        def _send(self, body: bytes, content_type: str, extra: dict | None = None) -> None:
            self._start_body(len(body), content_type, extra)
            self.wfile.write(body)

        def _start_body(self, length: int, content_type: str, extra: dict | None = None) -> None:
            """A 200 with its headers; the caller writes the body, whole or streamed."""
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="gpufleet lab model registry")
    parser.add_argument("--listen", default="127.0.0.1:0", help="ADDRESS:PORT to serve on")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=SIZE",
        help="a model to serve, such as llama3.1:8b=1MB (repeatable)",
    )
    parser.add_argument(
        "--corrupt",
        action="append",
        default=[],
        metavar="NAME=SIZE",
        help="a model served with a corrupt weights blob, whose pull fails (repeatable)",
    )
    parser.add_argument("--files", type=Path, help="directory served under /files/")
    args = parser.parse_args()
    models = {}
    for spec in (args.model or ["llama3.1:8b=1MB", "qwen2.5:7b=1MB"]) + args.corrupt:
        name, _equals, size = spec.partition("=")
        models[name] = parse_size(size or "1MB")
    host, _colon, port = args.listen.rpartition(":")
    corrupt = frozenset(spec.partition("=")[0] for spec in args.corrupt)
    registry = Registry(models, args.files, corrupt)
    print(registry.start(host, int(port)), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
