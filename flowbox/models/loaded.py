"""Local models in memory: at most ``models_max_loaded`` worker processes, and at most
``models_memory_mb`` of model files (their size is the estimate), least recently used out first.

Each local model (``local``, each registered one) is a ``Slot``. Its ``LocalChatModel`` is made on
first use and kept (the tokenizer, in the server, for counting tokens); "loaded" is its worker
process, which holds the weights. Unloading closes the worker; the next use starts it again.

A model is never unloaded while anyone uses it: every generation holds its model (``use``) from
queueing to its last token. A load that needs room unloads idle models only; when the models that
would have to go are all busy, it waits until one is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Any, AsyncIterator, Callable

from ..errors import ModelError

log = logging.getLogger("flowbox.models")


class Slot:
    def __init__(self, models: LoadedModels, name: str, size: int, make: Callable[[], Any], settings: tuple = ()):
        self.name = name
        self.size = size  # bytes of its file: what loading it costs, roughly
        self.settings = settings  # what it was made with: other settings mean another slot
        self.model: Any = None  # the LocalChatModel, once made
        self.loaded = False
        self.closed = False  # replaced or shut down: never loaded again
        self.active = 0  # generations holding it (waiting in its queue or running)
        self._make = make
        self.backend = LocalBackend(self, models)

    def load(self) -> None:
        """Blocking: makes the model (which starts its worker) or starts its worker again."""
        if self.model is None:
            self.model = self._make()
        else:
            self.model.worker.start()

    def unload(self) -> None:
        """Blocking: stops the worker; the tokenizer stays."""
        if self.model is not None:
            self.model.worker.close()


class LoadedModels:
    def __init__(self, max_loaded: int, memory_bytes: int = 0):
        self.max_loaded = max(1, max_loaded)
        self.memory_bytes = memory_bytes  # 0: no limit beyond the count
        self._lru: OrderedDict[Slot, None] = OrderedDict()  # loaded slots, least recently used first
        self._load_lock = asyncio.Lock()  # one load (and its unloads) at a time
        self._released = asyncio.Event()

    @property
    def slots(self) -> list[Slot]:
        """The loaded slots, least recently used first."""
        return list(self._lru)

    @property
    def loading(self) -> bool:
        """A load is under way (or waiting for room)."""
        return self._load_lock.locked()

    def adopt(self, slot: Slot) -> None:
        """Loads a slot before the event loop runs (``flowbox serve`` loads ``local`` first)."""
        slot.load()
        slot.loaded = True
        self._lru[slot] = None

    @contextlib.asynccontextmanager
    async def use(self, slot: Slot) -> AsyncIterator[Any]:
        """Holds the slot's model loaded for the block (loading it first if it is not)."""
        if slot.closed:  # its file or settings changed since the caller got it
            raise ModelError(f"model {slot.name} was changed while in use; try again")
        slot.active += 1
        try:
            if not slot.loaded:
                await self._load(slot)
            self._lru.move_to_end(slot)
            yield slot.model
        finally:
            slot.active -= 1
            self._released.set()
            self._released = asyncio.Event()

    async def _load(self, slot: Slot) -> None:
        async with self._load_lock:
            while not slot.loaded:
                victims = self._room_for(slot)
                if victims is None:  # the models in the way are busy: wait for one to be released
                    await self._released.wait()
                    continue
                for victim in victims:  # unloaded from now on: a new user of one waits for the lock
                    victim.loaded = False
                    del self._lru[victim]
                for victim in victims:
                    log.info("unloading model %s (least recently used) to load %s", victim.name, slot.name)
                    await asyncio.to_thread(victim.unload)
                loading = asyncio.ensure_future(self._start(slot))
                try:
                    await asyncio.shield(loading)
                except asyncio.CancelledError:  # the caller gave up: the load still ends counted, then the lock goes
                    await loading
                    raise

    async def _start(self, slot: Slot) -> None:
        await asyncio.to_thread(slot.load)
        slot.loaded = True
        self._lru[slot] = None

    def _room_for(self, slot: Slot) -> list[Slot] | None:
        """The idle slots to unload, least recently used first, so that ``slot`` fits; None when
        it cannot fit until a busy one is released."""
        budget = self.memory_bytes
        if budget and slot.size > budget:
            raise ModelError(f"model {slot.name} ({slot.size >> 20} MB) is larger than models_memory_mb ({budget >> 20} MB)")
        count, used = len(self._lru), sum(s.size for s in self._lru)

        def fits() -> bool:
            return count < self.max_loaded and (not budget or used + slot.size <= budget)

        victims = []
        for loaded in self._lru:
            if fits():
                break
            if loaded.active == 0:
                victims.append(loaded)
                count, used = count - 1, used - loaded.size
        return victims if fits() else None

    def forget(self, slot: Slot) -> None:
        """Takes an idle slot out for good (its model is being closed: replaced, or at shutdown)."""
        slot.loaded, slot.closed = False, True
        self._lru.pop(slot, None)

    def slot(self, name: str, size: int, make: Callable[[], Any], settings: tuple = ()) -> Slot:
        return Slot(self, name, size, make, settings)


class LocalBackend:
    """A local model as its callers see it (``ModelRegistry.get``): the same object for as long as the
    model keeps its name and settings, whether its worker is loaded or not. Each generation holds the
    model loaded; everything else (token counts, its queue, its worker) is the ``LocalChatModel``'s."""

    def __init__(self, slot: Slot, models: LoadedModels):
        self._slot = slot
        self._models = models

    @property
    def name(self) -> str:
        return self._slot.model.name

    @property
    def n_ctx(self) -> int:
        return self._slot.model.n_ctx

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self._slot.model.count_tokens(messages)

    async def stream(self, request, key: str = ""):
        async with self._models.use(self._slot) as model:
            async with contextlib.aclosing(model.stream(request, key)) as events:
                async for event in events:
                    yield event

    def __getattr__(self, attr: str) -> Any:  # the LocalChatModel's own (scheduler, worker, render, ...)
        if attr.startswith("__") or attr in ("_slot", "_models") or self._slot.model is None:
            raise AttributeError(attr)
        return getattr(self._slot.model, attr)
