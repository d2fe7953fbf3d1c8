"""Native model code in a supervised child process.

llama.cpp aborts the whole process on some inputs (an assertion, a C++ exception that crosses
its C API), and an abort cannot be caught. So the code that runs a model lives in a child
process that owns it, as Ollama runs its llama.cpp runner beside its server: the server talks
to it over a pipe, and when the child dies, only the calls it was running fail (``ModelCrashed``,
the documented 503) and the next call starts a fresh child.

The child runs a *runner*: an object built by ``factory(**options)`` in the child, whose methods
take ``(*args, cancel, emit, **kwargs)``: ``cancel`` is a ``threading.Event`` set when the caller
gives up, ``emit(item)`` streams an item back before the method's return value. Calls run one
at a time in the child, in the order sent; a reader thread in the child takes cancellations
while a call runs. A runner whose ``concurrent`` is true has each call run at once on a thread
of its own instead (it coordinates them itself: the chat runner decodes them in one batch).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import traceback
from typing import Any, Callable

from ..errors import ModelError

log = logging.getLogger("flowbox.models")
_exiting = False  # the process is exiting: multiprocessing then stops the workers, which is no crash


@atexit.register  # runs before multiprocessing's own exit handler, registered earlier
def _note_exit() -> None:
    global _exiting
    _exiting = True


class ModelCrashed(ModelError):
    """The model's worker process died while running this call; it restarts for the next one."""


class ModelCallFailed(ModelError):
    """The runner raised: the message is its exception's."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# -- the child ------------------------------------------------------------------------------

# llama.cpp's CPU threads wait for each other through OpenMP between the operations of a step. By default
# they spin for about a millisecond first: with the server, another model or anything else on the same
# cores, spinning threads steal the time slices of the ones they wait for, and a reply that takes a second
# on an idle machine took minutes. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs a wake-up per
# operation instead: on one 2-core machine a MiniLM query took 9.8 ms instead of 6.9, and SmolLM2 generated
# 34 tokens/s instead of 115 (a bare llama.cpp loop with the same model: 133). So every worker spins
# briefly (this many iterations: tens of microseconds) and then sleeps: MiniLM 5.4 ms, SmolLM2 115 tokens/s
# alone and about 150 for 4 chats together (86 when sleeping at once). An OpenMP setting in the
# environment is kept as it is, for every worker.
SPIN_COUNT = "10000"
_CHOSEN = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ


def thread_wait() -> dict[str, str | None]:
    """The OpenMP environment of a worker's process (None: unset)."""
    if _CHOSEN:
        return {}
    return {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": SPIN_COUNT}


def _serve(conn, factory: Callable[..., Any], options: dict[str, Any], env: dict[str, str | None]) -> None:
    for key, value in env.items():  # before the runner loads llama.cpp (and its OpenMP reads them)
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        runner = factory(**options)
    except Exception as exc:  # a load that fails is an answer, not a crash
        conn.send(("failed", f"{exc}"))
        return
    conn.send(("ready", getattr(runner, "info", {})))
    calls: queue.SimpleQueue = queue.SimpleQueue()
    cancels: dict[int, threading.Event] = {}
    send_lock = threading.Lock()  # concurrent calls (and the runner's own threads) send on one pipe

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("close",)
            if message[0] == "close":  # the server closes us, or is gone: stop what runs and exit
                for event in list(cancels.values()):
                    event.set()
                calls.put(None)
                return
            if message[0] == "cancel":
                event = cancels.get(message[1])
                if event is not None:
                    event.set()
            else:
                cancels[message[1]] = threading.Event()  # registered before any cancel of it is read
                calls.put(message)

    def run(call_id: int, method: str, args: tuple, kwargs: dict) -> None:
        def emit(item: Any) -> None:
            send(("event", call_id, item))

        try:
            value = getattr(runner, method)(*args, cancel=cancels[call_id], emit=emit, **kwargs)
            send(("result", call_id, value))
        except Exception as exc:
            send(("error", call_id, type(exc).__name__, str(exc) or traceback.format_exc(limit=1)))
        finally:
            cancels.pop(call_id, None)

    threading.Thread(target=read, name="flowbox-worker-reader", daemon=True).start()
    concurrent = getattr(runner, "concurrent", False)
    while (message := calls.get()) is not None:
        if concurrent:
            threading.Thread(target=run, args=message[1:], name="flowbox-worker-call", daemon=True).start()
        else:
            run(*message[1:])


# -- the server side --------------------------------------------------------------------------

class _Call:
    """One call in flight: its messages are handed to ``put`` from the pipe's reader thread."""

    def __init__(self, conn, put: Callable[[tuple], None]):
        self.conn = conn
        self.put = put


class ModelWorker:
    """A child process running ``factory(**options)``; started on first use, restarted after a crash."""

    def __init__(self, factory: Callable[..., Any], options: dict[str, Any], *, name: str):
        self.factory = factory
        self.options = options
        self.name = name
        self.info: dict[str, Any] = {}
        self.crashes = 0  # child processes lost while running (not counting a normal close)
        self._proc = None
        self._conn = None
        self._closing = False
        self._start_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Call] = {}
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Starts the child and waits until its model is loaded (blocking: call off the event loop)."""
        with self._start_lock:
            if self._conn is not None:
                return
            self._closing = False
            context = multiprocessing.get_context("spawn")  # no fork: the server has threads and an event loop
            conn, child_conn = context.Pipe()
            proc = context.Process(target=_serve, args=(child_conn, self.factory, self.options, thread_wait()),
                                   name=f"flowbox-model-{self.name}", daemon=True)
            proc.start()
            child_conn.close()
            try:
                message = conn.recv()
            except (EOFError, OSError):
                proc.join(5)
                conn.close()
                raise ModelError(f"the {self.name} model's worker exited while loading (exit code {proc.exitcode})") from None
            if message[0] == "failed":
                proc.join(5)
                conn.close()
                raise ModelError(message[1])
            self.info = message[1]
            self._proc, self._conn = proc, conn
            threading.Thread(target=self._read, args=(proc, conn), name=f"flowbox-model-{self.name}", daemon=True).start()

    def _read(self, proc, conn) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            call = self._pending.get(message[1])
            if call is not None:
                call.put(message)
        proc.join(5)
        with self._start_lock:
            if self._conn is conn:
                self._proc = self._conn = None
            lost = [call for call in list(self._pending.values()) if call.conn is conn]
        conn.close()
        if not (self._closing or _exiting):
            self.crashes += 1
            log.error("the %s model's worker stopped (exit code %s); %d call(s) in flight failed, it restarts on the next call",
                      self.name, proc.exitcode, len(lost))
        for call in lost:
            call.put(("crashed", 0))

    def _send(self, conn, message: tuple) -> None:
        with self._send_lock:
            conn.send(message)

    def _begin(self, method: str, args: tuple, kwargs: dict, put: Callable[[tuple], None]) -> tuple[int, Any]:
        conn = self._conn
        if conn is None:
            raise ModelCrashed(f"the {self.name} model's worker is not running")
        call_id = next(self._ids)
        self._pending[call_id] = _Call(conn, put)
        try:
            self._send(conn, ("call", call_id, method, args, kwargs))
        except (OSError, ValueError) as exc:  # the pipe broke: the reader reports the crash
            self._pending.pop(call_id, None)
            raise ModelCrashed(f"the {self.name} model's worker stopped") from exc
        return call_id, conn

    def _outcome(self, message: tuple) -> Any:
        if message[0] == "result":
            return message[2]
        if message[0] == "error":
            raise ModelCallFailed(message[2], message[3])
        raise ModelCrashed(f"the {self.name} model's worker stopped while running this request; it restarts for the next one")

    async def call(self, method: str, *args: Any, on_event: Callable[[Any], Any] | None = None, **kwargs: Any) -> Any:
        """Runs ``runner.method(*args, **kwargs)`` in the child; ``on_event`` gets each emitted item
        on the event loop, in order. Cancelling the caller cancels the call in the child and waits
        until the child has let go of it, so the model is free when this returns."""
        if self._conn is None:
            await asyncio.to_thread(self.start)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()
        call_id, conn = self._begin(method, args, kwargs, lambda m: loop.call_soon_threadsafe(inbox.put_nowait, m))
        try:
            while True:
                try:
                    message = await inbox.get()
                except asyncio.CancelledError:
                    with contextlib.suppress(OSError, ValueError):
                        self._send(conn, ("cancel", call_id))
                    while (await asyncio.shield(inbox.get()))[0] == "event":
                        pass
                    raise
                if message[0] != "event":
                    return self._outcome(message)
                if on_event is not None:
                    on_event(message[2])
        finally:
            self._pending.pop(call_id, None)

    def call_then(self, method: str, args: tuple, on_outcome: Callable[[Any, ModelError | None], None]) -> None:
        """Starts ``runner.method(*args)`` and returns at once; ``on_outcome(value, None)`` or
        ``on_outcome(None, error)`` is called once, from the pipe's reader thread (no thread waits for
        the answer). The worker must be running (``start``); raises ``ModelCrashed`` if it is not."""
        ids: list[int] = []

        def put(message: tuple) -> None:
            if message[0] == "event":
                return
            self._pending.pop(message[1] or (ids[0] if ids else 0), None)
            try:
                value = self._outcome(message)
            except ModelError as exc:
                on_outcome(None, exc)
            else:
                on_outcome(value, None)

        call_id, _ = self._begin(method, args, {}, put)
        ids.append(call_id)

    def call_sync(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``call`` for a thread that is not the event loop's (blocking)."""
        if self._conn is None:
            self.start()
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        call_id, _ = self._begin(method, args, kwargs, inbox.put)
        try:
            while (message := inbox.get())[0] == "event":
                pass
            return self._outcome(message)
        finally:
            self._pending.pop(call_id, None)

    def kill(self) -> None:
        """Kills the child as a crash would (for tests and for a child that stopped answering)."""
        proc = self._proc
        if proc is not None:
            proc.kill()

    def close(self) -> None:
        """Stops the child: it cancels what runs and exits; the reader thread then closes the pipe."""
        with self._start_lock:
            proc, conn = self._proc, self._conn
            self._closing = True
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._send(conn, ("close",))
        if proc is not None:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
