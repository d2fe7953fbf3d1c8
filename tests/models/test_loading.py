"""Loading a llama.cpp model leaves the rest of the process alone: llama-cpp-python's quiet mode
points file descriptors 1 and 2 at /dev/null while a model loads, which would swallow whatever
other threads write meanwhile (the server's log lines, when the embedding model loads lazily)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import pytest

from flowbox.embeddings import LocalEmbedder
from flowbox.errors import ModelError
from flowbox.models.files import model_path
from flowbox.models.local import LocalChatModel


def _write_while(load) -> list[int]:
    """Runs ``load()`` while another thread writes numbered lines straight to descriptor 2."""
    stop = threading.Event()
    written: list[int] = []

    def writer():
        i = 0
        while not stop.is_set():
            os.write(2, f"beside the load {i}\n".encode())
            written.append(i)
            i += 1
            time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.02)
        load()
        time.sleep(0.02)
    finally:
        stop.set()
        thread.join()
    return written


@pytest.mark.parametrize("kind", ["embedding", "chat"])
def test_loading_a_model_keeps_other_threads_output(kind, models_dir, capfd):
    def load():
        if kind == "embedding":
            model = LocalEmbedder(model_path(models_dir, "all-minilm-l6-v2"), name="minilm", n_threads=2)
            model.close()
        else:
            model = LocalChatModel(model_path(models_dir, "smollm2"), name="local", n_ctx=512, cache_bytes=0)
            model.close()

    written = _write_while(load)
    err = capfd.readouterr().err
    missing = [i for i in written if f"beside the load {i}\n" not in err]
    assert written and not missing, f"{len(missing)} of {len(written)} lines written during the load were lost"
    assert "llama_model_loader" not in err and "Model metadata" not in err  # and llama.cpp's own chatter stays out


def test_a_refused_model_file_says_why(models_dir, tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="flowbox.llama")
    broken = tmp_path / "broken.gguf"
    data = model_path(models_dir, "smollm2").read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # a truncated download
    with pytest.raises(ModelError, match="corrupted or incomplete"):  # llama.cpp's reason, in the one-line error
        LocalChatModel(broken, name="local", n_ctx=512, cache_bytes=0)
    assert not caplog.records  # said once, in the error, not again in the log


def test_loads_at_once_leave_the_streams_as_they_were(models_dir):
    before = sys.stdout, sys.stderr
    models = []

    def load(i: int) -> None:
        models.append(LocalEmbedder(model_path(models_dir, "all-minilm-l6-v2"), name=f"minilm-{i}", n_threads=1))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for model in models:
        model.close()
    assert len(models) == 3 and (sys.stdout, sys.stderr) == before
