"""Loaded models, as Ollama's scheduler keeps them: per-model parallel slots, a bounded
queue, keep_alive expiry and a cap on loaded models with least-recently-used eviction. A model
is loaded once for all its names (copies share the weights file, by which Ollama keys its
runners) and listed under the name it was first asked for."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from .store import MODEL_MEDIA_TYPE, LocalModel, Store

READ_CHUNK = 8 << 20


class ServerBusy(Exception):
    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


@dataclass
class Runner:
    model: LocalModel
    slots: asyncio.Semaphore
    load_seconds: float
    active: int = 0
    expires_at: float | None = None
    last_used: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> str:
        return runner_key(self.model)


def runner_key(model: LocalModel) -> str:
    """What a runner is loaded for: the weights blob, shared by every copy of a model."""
    layer = model.layer(MODEL_MEDIA_TYPE)
    return layer["digest"] if layer else model.manifest_digest


class Scheduler:
    def __init__(self, store: Store, num_parallel: int, max_queue: int, max_loaded: int) -> None:
        self.store = store
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.max_loaded = max_loaded
        self.loaded: dict[str, Runner] = {}
        self.loading: dict[str, asyncio.Future[Runner]] = {}
        self.pending = 0
        self.changed = asyncio.Condition()

    async def acquire(self, model: LocalModel) -> tuple[Runner, float]:
        """A slot on the model's runner, loading it first; returns it and the load time."""
        if self.pending >= self.max_queue:
            raise ServerBusy
        self.pending += 1
        try:
            runner, load_seconds = await self._runner(model)
            await runner.slots.acquire()
        finally:
            self.pending -= 1
        runner.active += 1
        runner.last_used = time.monotonic()
        return runner, load_seconds

    async def release(self, runner: Runner, keep_alive: float | None) -> None:
        runner.active -= 1
        runner.slots.release()
        runner.last_used = time.monotonic()
        runner.expires_at = None if keep_alive is None else time.time() + keep_alive
        if keep_alive == 0 and runner.active == 0:
            await self.unload(runner.key)
        async with self.changed:
            self.changed.notify_all()

    async def unload(self, key: str) -> None:
        runner = self.loaded.get(key)
        if runner is not None and runner.active == 0:
            del self.loaded[key]
            async with self.changed:
                self.changed.notify_all()

    async def _runner(self, model: LocalModel) -> tuple[Runner, float]:
        key = runner_key(model)
        if key in self.loaded:
            return self.loaded[key], 0.0
        if key in self.loading:
            return await asyncio.shield(self.loading[key]), 0.0
        future: asyncio.Future[Runner] = asyncio.get_running_loop().create_future()
        self.loading[key] = future
        try:
            await self._make_room(key)
            started = time.monotonic()
            await asyncio.to_thread(self._read_model_blob, model)
            runner = Runner(model, asyncio.Semaphore(self.num_parallel), time.monotonic() - started)
            self.loaded[key] = runner
            future.set_result(runner)
            return runner, runner.load_seconds
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self.loading[key]

    async def _make_room(self, key: str) -> None:
        """Evict the least recently used idle model while the cap is reached."""
        async with self.changed:
            while len(self.loaded) - (key in self.loaded) >= self.max_loaded:
                idle = [r for r in self.loaded.values() if r.active == 0 and r.key != key]
                if idle:
                    del self.loaded[min(idle, key=lambda r: r.last_used).key]
                    continue
                await self.changed.wait()
            self.loaded.pop(key, None)

    def _read_model_blob(self, model: LocalModel) -> None:
        """Loading reads the weights from disk, as Ollama does, so storage speed shows."""
        layer = model.layer(MODEL_MEDIA_TYPE)
        if layer is None:
            return
        with self.store.blob_path(layer["digest"]).open("rb") as weights:
            while weights.read(READ_CHUNK):
                pass

    async def expire(self) -> None:
        now = time.time()
        for runner in list(self.loaded.values()):
            if runner.active == 0 and runner.expires_at is not None and runner.expires_at <= now:
                await self.unload(runner.key)

    async def reap_forever(self, interval: float = 0.25) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.expire()
