"""Model loading and the backends agents run on. ``ModelRegistry`` is the one place that maps
a model name (``local``, a remote's name, a model added with ``flowbox models add``) to a backend."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

from ..config import Config
from ..errors import ModelError, StartupError
from .base import ChatBackend, ChatRequest, ChatResult, Done, TextDelta, ToolCall, ToolSpec, generate
from .files import ensure_model, model_path
from .loaded import LoadedModels, Slot
from .registry import Registered, all_registered

LOCAL = "local"

__all__ = [
    "LOCAL", "ModelRegistry", "ChatBackend", "ChatRequest", "ChatResult", "Done", "TextDelta",
    "ToolCall", "ToolSpec", "generate",
]


class ModelRegistry:
    def __init__(self, config: Config):
        self.config = config
        self.memory = LoadedModels(config.models_max_loaded, config.models_memory_mb << 20)
        self._slots: dict[str, Slot] = {}  # local models by name, as last used
        self._retired: list[Slot] = []  # replaced (their file or settings changed): closed on the next get
        self._remotes: dict = {}
        self._db = None
        self._db_lock = threading.Lock()
        self._added: dict[str, Registered] = {}

    def added(self) -> dict[str, Registered]:
        """The models added with ``flowbox models add``, read now: the command may add one while
        flowbox serves. A few rows from SQLite's page cache, microseconds (as ``Store.lookup``), on a
        connection that never waits for a lock (busy: the last answer)."""
        from ..db import sqlite3

        with self._db_lock:
            try:
                if self._db is None:
                    if not self.config.db_path.exists():
                        return {}
                    self._db = sqlite3.connect(str(self.config.db_path), isolation_level=None, check_same_thread=False, timeout=0)
                    self._db.row_factory = sqlite3.Row
                self._added = all_registered(self._db)
            except sqlite3.OperationalError:
                pass  # busy, or a database not migrated yet
        return self._added

    def names(self) -> list[str]:
        return [LOCAL, *self.config.remotes, *(n for n in self.added() if n not in self.config.remotes)]

    def knows(self, name: str) -> bool:
        return name in self.names()

    def is_local(self, name: str) -> bool:
        """A model that runs here (llama.cpp), as opposed to a remote one."""
        return name == LOCAL or (name not in self.config.remotes and name in self.added())

    def backend(self) -> str:
        """Where local models compute, in words: "CPU", or "CUDA (all layers offloaded)"."""
        from .llama_load import amx_kept_off, backend, gpu_layers

        name, layers = backend(), gpu_layers(self.config.n_gpu_layers)
        if name == "CPU":
            return "CPU (weights kept out of Intel AMX buffers: see the README's Models section)" if amx_kept_off() else "CPU"
        if layers == 0:
            return f"CPU (llama.cpp was built with {name}, but n_gpu_layers is 0)"
        return f"{name} ({'all' if layers == -1 else layers} layers offloaded)"

    def chat_model_path(self, progress: bool = False) -> Path:
        return ensure_model(self.config.models_path, self.config.chat_model, progress=progress)

    def load_local(self, progress: bool = False):
        """Loads the local chat model (blocking; ``flowbox serve`` does, before anything else runs)."""
        slot = self._slot(LOCAL, progress)
        if not slot.loaded:
            self.memory.adopt(slot)
        return slot.backend

    def _slot(self, name: str, progress: bool = False) -> Slot | None:
        """The slot of a local model by name (None: no such model), made anew when its settings changed."""
        if name == LOCAL:
            path = model_path(self.config.models_path, self.config.chat_model)
            settings, make = (str(path),), functools.partial(self._make_local, progress)
            size = path.stat().st_size if path.exists() else 0
        else:
            model = self.added().get(name)
            if model is None:
                return None
            settings, make, size = model.settings(), functools.partial(self._make_added, model), model.size
        slot = self._slots.get(name)
        if slot is None or (slot.settings != settings and slot.active == 0):
            if slot is not None:
                self.memory.forget(slot)
                self._retired.append(slot)
            slot = self._slots[name] = self.memory.slot(name, size, make, settings)
        return slot

    def _make_local(self, progress: bool):
        from .local import LocalChatModel

        path = self.chat_model_path(progress)
        self._slots[LOCAL].size = path.stat().st_size
        try:
            return LocalChatModel(path, name=Path(path).stem, **self._load_options(None, None, None, ""))
        except Exception as exc:  # llama.cpp reports a bad file as ValueError/RuntimeError
            raise StartupError(f"cannot load chat model {path}: {exc}; delete it and run 'flowbox models pull'") from exc

    def _make_added(self, model: Registered):
        from .local import LocalChatModel

        try:
            return LocalChatModel(Path(model.path), name=model.name,
                                  **self._load_options(model.n_ctx, model.threads, model.gpu_layers, model.chat_format))
        except Exception as exc:
            raise ModelError(f"cannot load model {model.name} ({model.path}): {exc}") from exc

    def _load_options(self, n_ctx: int | None, threads: int | None, gpu_layers: int | None, chat_format: str) -> dict:
        """A local model's load settings: its own where it has them, else the global ones."""
        from .llama_load import gpu_layers as resolve_gpu_layers

        return {
            "n_ctx": n_ctx or self.config.n_ctx,
            "n_threads": threads or self.config.threads,
            "n_gpu_layers": resolve_gpu_layers(self.config.n_gpu_layers if gpu_layers is None else gpu_layers),
            "chat_format": chat_format,
            "cache_bytes": self.config.prompt_cache_mb << 20,
            "max_waiting": self.config.max_queue,
            "parallel": self.config.parallel_sequences,
            "max_per_org": self.config.max_generations_per_org,
            "tool_format": self.config.tool_format,
        }

    async def get(self, name: str) -> ChatBackend:
        """The backend of a model by name, loaded (KeyError: no such model)."""
        name = name or LOCAL
        if name in self.config.remotes and name != LOCAL:
            if name not in self._remotes:
                from .remote import RemoteChatModel

                self._remotes[name] = RemoteChatModel(self.config.remotes[name])
            return self._remotes[name]
        slot = self._slot(name)
        while self._retired:
            await self._close(self._retired.pop())
        if slot is None:
            raise KeyError(name)
        async with self.memory.use(slot):
            return slot.backend

    def loaded(self) -> dict[str, ChatBackend]:
        """The backends loaded now, by model name (what the metrics report on; nothing is loaded)."""
        local = {slot.name: slot.backend for slot in self.memory.slots if self._slots.get(slot.name) is slot}
        return {**local, **self._remotes}

    async def _close(self, slot: Slot) -> None:
        self.memory.forget(slot)
        if slot.model is not None:
            await asyncio.to_thread(slot.model.close)

    async def aclose(self) -> None:
        for remote in self._remotes.values():
            await remote.aclose()
        self._remotes.clear()
        for slot in [*self._slots.values(), *self._retired]:
            await self._close(slot)
        self._slots.clear()
        self._retired.clear()
        if self._db is not None:
            self._db.close()
            self._db = None
