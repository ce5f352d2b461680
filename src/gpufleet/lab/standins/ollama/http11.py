"""Just enough HTTP/1.1 over asyncio streams for Ollama's API: keep-alive, chunked streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


class BadRequest(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("request header too large") from exc
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise BadRequest("malformed request line") from exc
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    body = await _read_body(reader, headers)
    return Request(method.upper(), target.split("?", 1)[0], headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readline()
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY_BYTES:
        raise BadRequest("request body too large")
    return await reader.readexactly(length) if length else b""


class Response:
    """Writes one response: whole (json, text) or streamed in chunks, as NDJSON lines (Ollama's
    API) or as server-sent events (the OpenAI-compatible API)."""

    def __init__(self, writer: asyncio.StreamWriter, keep_alive: bool) -> None:
        self.writer = writer
        self.keep_alive = keep_alive
        self.started = False

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        reason = HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {reason}"]
        headers = {**headers, "Connection": "keep-alive" if self.keep_alive else "close"}
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def body(self, status: int, payload: bytes, content_type: str) -> None:
        self.started = True
        self.writer.write(
            self._head(status, {"Content-Type": content_type, "Content-Length": str(len(payload))})
            + payload
        )
        await self.writer.drain()

    async def json(self, status: int, obj: object) -> None:
        await self.body(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    async def text(self, status: int, text: str) -> None:
        await self.body(status, text.encode(), "text/plain; charset=utf-8")

    async def begin_stream(
        self, status: int = 200, content_type: str = "application/x-ndjson"
    ) -> None:
        self.started = True
        self.writer.write(
            self._head(status, {"Content-Type": content_type, "Transfer-Encoding": "chunked"})
        )
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()

    async def line(self, obj: object) -> None:
        await self.chunk(json.dumps(obj).encode() + b"\n")

    async def event(self, data: str) -> None:
        """One server-sent event: `data: ...` and the blank line that ends it."""
        await self.chunk(f"data: {data}\n\n".encode())

    async def end_stream(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


Handler = Callable[[Request, Response], Awaitable[None]]


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    try:
        while True:
            try:
                request = await read_request(reader)
            except BadRequest as exc:
                await Response(writer, keep_alive=False).json(400, {"error": str(exc)})
                return
            if request is None:
                return
            response = Response(writer, request.keep_alive)
            await handler(request, response)
            if not request.keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()
