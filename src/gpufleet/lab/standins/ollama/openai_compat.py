"""Ollama's OpenAI-compatible API (/v1/...), as Ollama's docs/openai.md and its `openai` Go
package shape it: chat and text completions, streamed as server-sent events ending with
`data: [DONE]` or answered whole, embeddings, the model list and one model; errors in
OpenAI's error object. Requests run on the same runners as the native API.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .api import ApiError, embedding, prompt_tokens
from .http11 import Request, Response

if TYPE_CHECKING:
    from .server import OllamaServer

Route = Callable[[Request, Response], Awaitable[None]]
MODELS_PREFIX = "/v1/models/"
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
FINGERPRINT = "fp_ollama"


def openai_error(status: int, message: str) -> dict:
    """OpenAI's error object, typed as Ollama types it by status."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": None,
        }
    }


def owned_by(display_name: str) -> str:
    """Ollama's owned_by: the name's namespace, `library` for the default one."""
    parts = display_name.split(":")[0].split("/")
    return parts[-2] if len(parts) >= 2 else "library"


class OpenAIApi:
    def __init__(self, server: OllamaServer) -> None:
        self.server = server
        self.ids = itertools.count(1)
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): self.chat_completions,
            ("POST", "/v1/completions"): self.completions,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("GET", "/v1/models"): self.models,
        }

    def route(self, request: Request) -> Route | None:
        """Routes with a parameter: GET /v1/models/{model}."""
        if request.method == "GET" and request.path.startswith(MODELS_PREFIX):
            return self.model
        return None

    # -- completions ---------------------------------------------------------------------------

    async def chat_completions(self, request: Request, response: Response) -> None:
        data = self.server.body(request)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "[] is too short - 'messages'")
        prompt = " ".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))
        await self._complete(
            data, response, prompt, f"chatcmpl-{next(self.ids)}", "chat.completion", chat_choice
        )

    async def completions(self, request: Request, response: Response) -> None:
        data = self.server.body(request)
        prompt = data.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError(400, "invalid type for 'prompt' field: expected a string")
        await self._complete(
            data, response, prompt, f"cmpl-{next(self.ids)}", "text_completion", text_choice
        )

    async def _complete(
        self,
        data: dict,
        response: Response,
        prompt: str,
        completion_id: str,
        object_name: str,
        choice: Callable[[str, bool], dict],
    ) -> None:
        """One completion, streamed as chunks (choice(token, True)) or whole (choice(text,
        False)), with OpenAI's usage from the stand-in's token counts."""
        text, model = self.server.existing(data)
        count = data.get("max_tokens") or self.server.config.response_tokens
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ApiError(400, "invalid type for 'max_tokens' field: expected a positive integer")
        stream = data.get("stream") is True
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        chunk_object = f"{object_name}.chunk" if object_name == "chat.completion" else object_name
        usage = {
            "prompt_tokens": prompt_tokens(prompt),
            "completion_tokens": count,
            "total_tokens": prompt_tokens(prompt) + count,
        }

        def envelope(kind: str, choices: list[dict]) -> dict:
            return {
                "id": completion_id,
                "object": kind,
                "created": int(time.time()),
                "model": text,
                "system_fingerprint": FINGERPRINT,
                "choices": choices,
            }

        async with self.server.slot(model, self.server.keep_alive(data)):
            if not stream:
                pieces = [token async for token in self.server.tokens(prompt, count)]
                whole = {"index": 0, **choice("".join(pieces), False), "finish_reason": "stop"}
                await response.json(200, {**envelope(object_name, [whole]), "usage": usage})
                return
            await response.begin_stream(content_type="text/event-stream")
            async for token in self.server.tokens(prompt, count):
                piece = {"index": 0, **choice(token, True), "finish_reason": None}
                await response.event(json.dumps(envelope(chunk_object, [piece])))
            last = {"index": 0, **choice("", True), "finish_reason": "stop"}
            await response.event(json.dumps(envelope(chunk_object, [last])))
            if include_usage:
                await response.event(json.dumps({**envelope(chunk_object, []), "usage": usage}))
            await response.event("[DONE]")
            await response.end_stream()

    # -- embeddings and models -----------------------------------------------------------------

    async def embeddings(self, request: Request, response: Response) -> None:
        data = self.server.body(request)
        inputs = data.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise ApiError(400, "invalid input")
        text, model = self.server.existing(data)
        async with self.server.slot(model, self.server.keep_alive(data)):
            vectors = [embedding(str(item)) for item in inputs]
        tokens = sum(prompt_tokens(str(item)) for item in inputs)
        await response.json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "embedding": vector, "index": index}
                    for index, vector in enumerate(vectors)
                ],
                "model": text,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    async def models(self, _request: Request, response: Response) -> None:
        data = [self._model(m.name.display, m.modified) for m in self.server.store.models()]
        await response.json(200, {"object": "list", "data": data})

    async def model(self, request: Request, response: Response) -> None:
        name = request.path.removeprefix(MODELS_PREFIX)
        _text, found = self.server.existing({"model": name})
        await response.json(200, self._model(name, found.modified))

    @staticmethod
    def _model(name: str, modified: float) -> dict:
        return {"id": name, "object": "model", "created": int(modified), "owned_by": owned_by(name)}


def chat_choice(text: str, streamed: bool) -> dict:
    """A chat choice's text: a chunk's delta, or the whole answer's message."""
    return {"delta" if streamed else "message": {"role": "assistant", "content": text}}


def text_choice(text: str, _streamed: bool) -> dict:
    return {"text": text}


def content_text(content: object) -> str:
    """A message's text: a string, or the text parts of an array of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""
