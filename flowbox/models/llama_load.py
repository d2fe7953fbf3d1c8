"""Loading llama.cpp models without silencing the process.

Quiet (``verbose=False``), llama-cpp-python points file descriptors 1 and 2 at /dev/null while a
model loads, which also swallows what every other thread writes meanwhile: the server's log lines,
when the embedding model loads on the first knowledge call. So flowbox loads with ``verbose=True``
(no descriptor games) and:
- sends llama.cpp's own log to the ``flowbox.llama`` logger, errors only; a load's errors go into
  its exception instead (why a model file was refused, in one line);
- keeps what llama-cpp-python prints itself while loading out of sys.stdout/sys.stderr (log
  handlers hold their own stream, so the server's log is not affected).

On a CPU with Intel AMX (Sapphire Rapids and later), a llama.cpp built there moves quantized weights into
AMX buffers, and its AMX matrix product crashes the process (SIGSEGV in ``ggml_backend_amx_mul_mat``) on
some of these machines: on one of ours, SmolLM2's first decode, every time (llama.cpp issue 20824, open).
So every model flowbox loads keeps its weights in plain CPU buffers there (``load_llama``); elsewhere
llama.cpp's defaults stand.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import logging
import threading
from typing import Any

log = logging.getLogger("flowbox.llama")
GGML_LOG_LEVEL_ERROR = 4  # ggml's enum today: none, debug, info, warn, error, cont

_lock = threading.Lock()
_load_lock = threading.Lock()
_callback: Any = None  # the ctypes callback must live as long as the process: llama.cpp keeps its address
_loading = threading.local()  # llama.cpp logs on the thread that called it: a loading thread's errors go in its exception


def _route_llama_log() -> None:
    global _callback
    import llama_cpp

    with _lock:
        if _callback is not None:
            return

        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, user_data: Any) -> None:
            if level == GGML_LOG_LEVEL_ERROR:
                line = text.decode("utf-8", "replace").rstrip()
                errors = getattr(_loading, "errors", None)
                if errors is not None:
                    errors.append(line)
                else:
                    log.error("%s", line)

        llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
        _callback = forward


@functools.cache
def amx_kept_off() -> bool:
    """Whether models load here with their weights kept out of AMX buffers: llama.cpp was built with AMX,
    runs on a CPU that has it, and its model parameters can turn its extra buffer types off."""
    import llama_cpp

    return ("AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode("utf-8", "replace")
            and any(name == "use_extra_bufts" for name, *_ in llama_cpp.llama_model_params._fields_))


def _without_amx(params: Any) -> Any:
    """``params`` with AMX weight buffers off where they would be used (and with them llama.cpp's other
    "extra" buffer types: weight repacking, which AMX machines then go without)."""
    if amx_kept_off():
        params.use_extra_bufts = False
    return params


@functools.cache
def keep_weights_out_of_amx() -> None:
    """Make every ``llama_cpp.Llama`` this process loads from now on start from ``_without_amx``'s
    parameters (it builds its own from llama.cpp's defaults): for the high-level class, and for
    ``llama_cpp.server``. Once per process."""
    import llama_cpp
    import llama_cpp.llama_cpp

    defaults = llama_cpp.llama_cpp.llama_model_default_params
    llama_cpp.llama_cpp.llama_model_default_params = llama_cpp.llama_model_default_params = (
        lambda: _without_amx(defaults()))


def load_llama(cls: Any = None, **options: Any) -> Any:
    """``llama_cpp.Llama(**options)`` (or a subclass), loaded without touching the process's output,
    its weights kept out of AMX buffers (a low-level ``LlamaModel``'s ``params`` as well)."""
    import llama_cpp

    _route_llama_log()
    keep_weights_out_of_amx()
    if "params" in options:
        _without_amx(options["params"])
    _loading.errors = []
    try:
        # One load at a time: two overlapping redirects would restore each other's stand-ins, not the real streams.
        with _load_lock, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            llm = (cls or llama_cpp.Llama)(verbose=True, **options)
    except (ValueError, RuntimeError) as exc:
        reasons = [line.split("error loading model: ", 1)[-1] for line in _loading.errors if "error loading model" in line]
        raise type(exc)(f"{exc} ({reasons[-1]})" if reasons else str(exc)) from exc
    finally:
        _loading.errors = None
    llm.verbose = False  # and no timing lines after each call
    return llm


GPU_BACKENDS = ("CUDA", "Metal", "Vulkan", "ROCm", "HIP", "SYCL", "MUSA", "CANN", "OpenCL")


def gpu_layers(requested: int) -> int:
    """The layers to offload: ``-1`` is all of them when llama.cpp was built with a GPU backend,
    none when it was not (then llama.cpp would ignore it anyway, but say so in no place)."""
    import llama_cpp

    if requested == -1 and not llama_cpp.llama_supports_gpu_offload():
        return 0
    return requested


def backend() -> str:
    """The compute backend llama.cpp was built with, by the name its system info gives it: a GPU
    one (CUDA, Metal, Vulkan, ...) if there is one, else CPU."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace")
    sections = [part.split(" : ")[0].strip() for part in info.split("|") if " : " in part]
    gpus = [name for name in sections if name.upper() in {b.upper() for b in GPU_BACKENDS}]
    if gpus:
        return gpus[0]
    return "GPU" if llama_cpp.llama_supports_gpu_offload() else "CPU"
