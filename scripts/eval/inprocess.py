"""A real flowbox server for the evaluation scripts, in their own process: a temp data dir, a free
loopback port, uvicorn in a background thread, and its event loop open to the script (``call``) so
that it can also reach the services directly."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

MODELS_DIR = Path(os.environ.get("FLOWBOX_TEST_MODELS_DIR") or Path.home() / ".cache" / "flowbox-test-models")


class InProcessServer:
    """A real flowbox server (loopback) in a background thread, on ``data_dir`` (default: a new temp
    dir); ``models`` are the built-in models prepared into ``models_dir`` first (offline once there,
    as for the tests); ``settings`` are config settings of its own (``n_threads=1``)."""

    def __init__(self, name: str, models: tuple[str, ...], call_timeout: float = 600, *,
                 data_dir: str | None = None, models_dir: Path = MODELS_DIR, **settings) -> None:
        import uvicorn

        from flowbox import config as config_mod
        from flowbox.app import create_app
        from flowbox.models.files import ensure_model

        models_dir.mkdir(parents=True, exist_ok=True)
        for model in models:
            ensure_model(models_dir, model, progress=True)
        self.temporary = None if data_dir else tempfile.mkdtemp(prefix=f"flowbox-eval-{name}-")  # removed by stop()
        os.environ["FLOWBOX_DATA_DIR"] = data_dir or self.temporary
        os.environ["FLOWBOX_MODELS_DIR"] = str(models_dir)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.call_timeout = call_timeout
        self.config = config_mod.load(None).replace(host="127.0.0.1", port=self.port, rate_limit_per_minute=0,
                                                    log_level="warning", **settings)
        self.began = time.perf_counter()
        self.app = create_app(self.config, preload_model=False)
        self.services = self.app.state.services
        self.uv = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False))
        self.uv.install_signal_handlers = lambda: None
        started = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            started.set()
            self.loop.run_until_complete(self.uv.serve())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait()
        deadline = time.monotonic() + 120
        while not self.uv.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.005)
        self.serving = time.perf_counter() - self.began  # seconds from create_app until it serves

    def call(self, coro, timeout: float | None = None):
        """Runs a coroutine on the server's loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout or self.call_timeout)

    def stop(self) -> None:
        self.uv.should_exit = True
        self.thread.join(timeout=60)  # the models close before the interpreter does
        if self.temporary and not self.thread.is_alive():
            shutil.rmtree(self.temporary, ignore_errors=True)
