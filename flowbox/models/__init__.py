"""Model loading and the backends agents run on. ``ModelRegistry`` is the one place that maps
a model name (``local``, a remote's name) to a loaded backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..config import Config
from ..errors import StartupError
from .base import ChatBackend, ChatRequest, ChatResult, Done, TextDelta, ToolCall, ToolSpec, generate
from .files import ensure_model

LOCAL = "local"

__all__ = [
    "LOCAL", "ModelRegistry", "ChatBackend", "ChatRequest", "ChatResult", "Done", "TextDelta",
    "ToolCall", "ToolSpec", "generate",
]


class ModelRegistry:
    def __init__(self, config: Config):
        self.config = config
        self._local = None
        self._remotes: dict = {}
        self._lock = asyncio.Lock()

    def names(self) -> list[str]:
        return [LOCAL, *self.config.remotes]

    def knows(self, name: str) -> bool:
        return name in (LOCAL, *self.config.remotes)

    def chat_model_path(self, progress: bool = False) -> Path:
        return ensure_model(self.config.models_path, self.config.chat_model, progress=progress)

    def load_local(self, progress: bool = False):
        """Loads the local chat model (blocking; call off the event loop)."""
        if self._local is None:
            from .local import LocalChatModel

            path = self.chat_model_path(progress)
            try:
                self._local = LocalChatModel(
                    path,
                    name=Path(path).stem,
                    n_ctx=self.config.n_ctx,
                    n_threads=self.config.threads,
                    cache_bytes=self.config.prompt_cache_mb << 20,
                    max_waiting=self.config.max_queue,
                )
            except Exception as exc:  # llama.cpp reports a bad file as ValueError/RuntimeError
                raise StartupError(f"cannot load chat model {path}: {exc}; delete it and run 'flowbox models pull'") from exc
        return self._local

    async def get(self, name: str) -> ChatBackend:
        if name in (LOCAL, "", None):
            if self._local is None:
                async with self._lock:
                    if self._local is None:
                        await asyncio.to_thread(self.load_local)
            return self._local
        if name in self.config.remotes:
            if name not in self._remotes:
                from .remote import RemoteChatModel

                self._remotes[name] = RemoteChatModel(self.config.remotes[name])
            return self._remotes[name]
        raise KeyError(name)

    async def aclose(self) -> None:
        for remote in self._remotes.values():
            await remote.aclose()
        self._remotes.clear()
        if self._local is not None:
            await asyncio.to_thread(self._local.close)
            self._local = None
