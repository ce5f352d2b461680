"""`ollama serve`: Ollama's HTTP API over the store and the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from . import VERSION
from .api import ApiError, embedding, prompt_tokens
from .config import Config, api_keep_alive
from .http11 import Request, Response, serve_connection
from .names import InvalidName, ModelName
from .openai_compat import OpenAIApi, openai_error
from .pull import PullError, pull
from .scheduler import Scheduler, ServerBusy, runner_key
from .store import DigestMismatch, LocalModel, Store, rfc3339

WORDS = [
    "The",
    "fleet",
    "answers",
    "every",
    "request",
    "from",
    "a",
    "warm",
    "model",
    "on",
    "its",
    "local",
    "NVMe",
    "disk",
    "while",
    "the",
    "load",
    "balancer",
    "keeps",
    "each",
    "stream",
    "on",
    "one",
    "host",
    "until",
    "it",
    "ends",
]


@dataclass
class Slot:
    """A request's place on a model's runner: how long loading the model took."""

    load_seconds: float


def now_rfc3339() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def ns(seconds: float) -> int:
    return int(seconds * 1e9)


class OllamaServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = Store(config.models)
        self.scheduler = Scheduler(
            self.store, config.num_parallel, config.max_queue, config.max_loaded_models
        )
        self.routes = {
            ("GET", "/"): self.root,
            ("HEAD", "/"): self.root,
            ("GET", "/api/version"): self.version,
            ("GET", "/api/tags"): self.tags,
            ("GET", "/api/ps"): self.ps,
            ("POST", "/api/show"): self.show,
            ("POST", "/api/pull"): self.pull,
            ("POST", "/api/generate"): self.generate,
            ("POST", "/api/chat"): self.chat,
            ("POST", "/api/embed"): self.embed,
            ("POST", "/api/embeddings"): self.embeddings,
            ("POST", "/api/copy"): self.copy,
            ("DELETE", "/api/delete"): self.delete,
        }
        self.openai = OpenAIApi(self)
        self.routes.update(self.openai.routes)

    # -- plumbing ------------------------------------------------------------------------------

    async def handle(self, request: Request, response: Response) -> None:
        route = self.routes.get((request.method, request.path)) or self.openai.route(request)
        if route is None:
            await response.text(404, "404 page not found")
            return
        try:
            await route(request, response)
        except ApiError as exc:
            if request.path.startswith("/v1/"):
                error = openai_error(exc.status, str(exc))
                if response.started:
                    await response.event(json.dumps(error))
                    await response.end_stream()
                else:
                    await response.json(exc.status, error)
            elif response.started:
                await response.line({"error": str(exc)})
                await response.end_stream()
            else:
                await response.json(exc.status, {"error": str(exc)})

    @staticmethod
    def body(request: Request) -> dict:
        if not request.body.strip():
            raise ApiError(400, "missing request body")
        try:
            data = json.loads(request.body)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"invalid character in request body: {exc.msg}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        return data

    @staticmethod
    def requested_name(data: dict) -> tuple[str, ModelName]:
        text = data.get("model") or data.get("name") or ""
        if not text:
            raise ApiError(400, "model is required")
        try:
            return text, ModelName.parse(text)
        except InvalidName:
            raise ApiError(400, "invalid model name") from None

    def existing(self, data: dict) -> tuple[str, LocalModel]:
        text, name = self.requested_name(data)
        model = self.store.get(name)
        if model is None:
            raise ApiError(404, f"model '{text}' not found")
        return text, model

    def keep_alive(self, data: dict) -> float | None:
        if data.get("keep_alive") is None:
            return self.config.keep_alive
        try:
            return api_keep_alive(data["keep_alive"])
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def details(self, model: LocalModel) -> dict:
        config = self.store.read_json_blob(model.manifest["config"]["digest"])
        return {
            "parent_model": "",
            "format": config.get("model_format", "gguf"),
            "family": config.get("model_family", ""),
            "families": config.get("model_families"),
            "parameter_size": config.get("model_type", ""),
            "quantization_level": config.get("file_type", ""),
        }

    # -- simple endpoints ------------------------------------------------------------------------

    async def root(self, _request: Request, response: Response) -> None:
        await response.text(200, "Ollama is running")

    async def version(self, _request: Request, response: Response) -> None:
        await response.json(200, {"version": VERSION})

    async def tags(self, _request: Request, response: Response) -> None:
        models = [
            {
                "name": m.name.display,
                "model": m.name.display,
                "modified_at": rfc3339(m.modified),
                "size": m.size,
                "digest": m.manifest_digest,
                "details": self.details(m),
            }
            for m in self.store.models()
        ]
        await response.json(200, {"models": models})

    async def ps(self, _request: Request, response: Response) -> None:
        models = []
        for runner in self.scheduler.loaded.values():
            until = runner.expires_at if runner.expires_at is not None else time.time() + 3.15e9
            models.append(
                {
                    "name": runner.model.name.display,
                    "model": runner.model.name.display,
                    "size": runner.model.size,
                    "digest": runner.model.manifest_digest,
                    "details": self.details(runner.model),
                    "expires_at": rfc3339(until),
                    "size_vram": 0,
                }
            )
        await response.json(200, {"models": models})

    async def show(self, request: Request, response: Response) -> None:
        _text, model = self.existing(self.body(request))
        details = self.details(model)
        template = self._layer_text(model, "application/vnd.ollama.image.template")
        params = self._layer_text(model, "application/vnd.ollama.image.params")
        parameters = "\n".join(
            f"{key:<30} {json.dumps(v) if isinstance(v, str) else v}"
            for key, values in (json.loads(params) if params else {}).items()
            for v in (values if isinstance(values, list) else [values])
        )
        model_blob = self.store.blob_path(model.manifest["layers"][0]["digest"])
        await response.json(
            200,
            {
                "license": self._layer_text(model, "application/vnd.ollama.image.license"),
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model_blob}\n'
                f'TEMPLATE """{template}"""\n',
                "parameters": parameters,
                "template": template,
                "details": details,
                "model_info": {
                    "general.architecture": details["family"],
                    "general.parameter_count": 0,
                },
                "capabilities": ["embedding"] if "bert" in details["family"] else ["completion"],
                "modified_at": rfc3339(model.modified),
            },
        )

    def _layer_text(self, model: LocalModel, media_type: str) -> str:
        layer = model.layer(media_type)
        return self.store.blob_path(layer["digest"]).read_text() if layer else ""

    async def delete(self, request: Request, response: Response) -> None:
        text, name = self.requested_name(self.body(request))
        model = self.store.get(name)
        if model is None:
            raise ApiError(404, f"model '{text}' not found")
        self.store.delete_manifest(name)
        referenced = self.store.referenced_digests()
        if runner_key(model) not in referenced:
            await self.scheduler.unload(runner_key(model))
        for layer in model.layers:
            if layer["digest"] not in referenced:
                self.store.blob_path(layer["digest"]).unlink(missing_ok=True)
        await response.body(200, b"", "application/json; charset=utf-8")

    async def copy(self, request: Request, response: Response) -> None:
        """A new name for a model: a second manifest with the same layers, no blob copied."""
        data = self.body(request)
        names = []
        for field in ("source", "destination"):
            text = data.get(field) or ""
            try:
                names.append(ModelName.parse(text))
            except InvalidName:
                raise ApiError(400, f"invalid {field} name") from None
        source, destination = names
        if self.store.get(source) is None:
            raise ApiError(404, f"model '{data['source']}' not found")
        raw = self.store.manifest_path(source).read_bytes()
        self.store.write_manifest(destination, raw)
        await response.body(200, b"", "application/json; charset=utf-8")

    # -- pull ------------------------------------------------------------------------------------

    async def pull(self, request: Request, response: Response) -> None:
        data = self.body(request)
        _text, name = self.requested_name(data)
        stream = data.get("stream", True) is not False
        loop = asyncio.get_running_loop()
        if stream:
            await response.begin_stream()

        def emit(status: dict) -> None:
            if stream:
                asyncio.run_coroutine_threadsafe(response.line(status), loop).result()

        try:
            await asyncio.to_thread(
                pull,
                self.store,
                name,
                bool(data.get("insecure")),
                self.config.registry,
                self.config.noprune,
                emit,
            )
        except (PullError, DigestMismatch) as exc:
            raise ApiError(500, str(exc)) from None
        if stream:
            await response.end_stream()
        else:
            await response.json(200, {"status": "success"})

    # -- inference -------------------------------------------------------------------------------

    async def generate(self, request: Request, response: Response) -> None:
        data = self.body(request)
        prompt = data.get("prompt") or ""
        await self._infer(
            data,
            response,
            prompt,
            lambda token: {"response": token},
            empty={"response": ""},
            final_extra={"context": [1, 2, 3]},
        )

    async def chat(self, request: Request, response: Response) -> None:
        data = self.body(request)
        messages = data.get("messages") or []
        prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        await self._infer(
            data,
            response,
            prompt if messages else "",
            lambda token: {"message": {"role": "assistant", "content": token}},
            empty={"message": {"role": "assistant", "content": ""}},
            final_extra={},
        )

    async def _infer(
        self,
        data: dict,
        response: Response,
        prompt: str,
        chunk: Callable[[str], dict],
        empty: dict,
        final_extra: dict,
    ) -> None:
        text, model = self.existing(data)
        keep_alive = self.keep_alive(data)
        if not prompt and keep_alive == 0:
            await self.scheduler.unload(runner_key(model))
            await response.json(
                200,
                {
                    "model": text,
                    "created_at": now_rfc3339(),
                    **empty,
                    "done": True,
                    "done_reason": "unload",
                },
            )
            return
        started = time.monotonic()
        async with self.slot(model, keep_alive) as slot:
            if not prompt:
                await response.json(
                    200,
                    {
                        "model": text,
                        "created_at": now_rfc3339(),
                        **empty,
                        "done": True,
                        "done_reason": "load",
                    },
                )
                return
            stream = data.get("stream", True) is not False
            options = data.get("options") or {}
            count = int(options.get("num_predict") or self.config.response_tokens)
            if stream:
                await response.begin_stream()
            pieces = []
            async for token in self.tokens(prompt, count):
                if stream:
                    await response.line(
                        {"model": text, "created_at": now_rfc3339(), **chunk(token), "done": False}
                    )
                else:
                    pieces.append(token)
            eval_seconds = time.monotonic() - started - slot.load_seconds
            final = {
                "model": text,
                "created_at": now_rfc3339(),
                **(empty if stream else chunk("".join(pieces))),
                "done": True,
                "done_reason": "stop",
                **final_extra,
                "total_duration": ns(time.monotonic() - started),
                "load_duration": ns(slot.load_seconds),
                "prompt_eval_count": prompt_tokens(prompt),
                "prompt_eval_duration": ns(0.001),
                "eval_count": count,
                "eval_duration": ns(eval_seconds),
            }
            if stream:
                await response.line(final)
                await response.end_stream()
            else:
                await response.json(200, final)

    @contextlib.asynccontextmanager
    async def slot(self, model: LocalModel, keep_alive: float | None) -> AsyncIterator[Slot]:
        """A slot on the model's runner for the request, released after it; a full queue is
        Ollama's 503."""
        try:
            runner, load_seconds = await self.scheduler.acquire(model)
        except ServerBusy as exc:
            raise ApiError(503, str(exc)) from None
        try:
            yield Slot(load_seconds)
        finally:
            await self.scheduler.release(runner, keep_alive)

    async def tokens(self, prompt: str, count: int) -> AsyncIterator[str]:
        """Tokens at the configured rate, so a stream lasts as long as a real model's."""
        seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")
        interval = 1.0 / self.config.tokens_per_second if self.config.tokens_per_second else 0
        for index in range(count):
            if interval:
                await asyncio.sleep(interval)
            word = WORDS[(seed + index) % len(WORDS)]
            yield word if index == 0 else " " + word

    async def embed(self, request: Request, response: Response) -> None:
        data = self.body(request)
        text, model = self.existing(data)
        inputs = data.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        started = time.monotonic()
        async with self.slot(model, self.keep_alive(data)) as slot:
            vectors = [embedding(str(item)) for item in inputs]
        await response.json(
            200,
            {
                "model": text,
                "embeddings": vectors,
                "total_duration": ns(time.monotonic() - started),
                "load_duration": ns(slot.load_seconds),
                "prompt_eval_count": sum(len(str(item).split()) for item in inputs),
            },
        )

    async def embeddings(self, request: Request, response: Response) -> None:
        """The older embeddings endpoint: one prompt, one vector, no counts."""
        data = self.body(request)
        _text, model = self.existing(data)
        async with self.slot(model, self.keep_alive(data)):
            vector = embedding(str(data.get("prompt") or ""))
        await response.json(200, {"embedding": vector})


async def serve(config: Config) -> None:
    server = OllamaServer(config)
    server.store.ensure()
    if not config.noprune:
        removed = server.store.prune()
        print(f"pruned {len(removed)} unused blobs", file=sys.stderr)
    listener = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, server.handle),
        config.host,
        config.port,
        limit=1 << 20,
        backlog=1024,
    )
    print(
        f"Listening on {config.host}:{config.port} (version {VERSION})", file=sys.stderr, flush=True
    )
    reaper = asyncio.create_task(server.scheduler.reap_forever())
    async with listener:
        try:
            await listener.serve_forever()
        finally:
            reaper.cancel()
