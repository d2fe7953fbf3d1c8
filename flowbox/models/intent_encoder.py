"""The built-in MiniLM as the intent matcher reads messages: MiniLM with low-rank changes to its weights.

``intent_encoder.npz`` holds, for each of ``TARGETS`` in each of MiniLM's six layers, two matrices ``a``
(rank x in) and ``b`` (out x rank), learned by ``scripts/intent_space/encoder.py`` from flows of many kinds
of business so that a customer's message lands near its own intent's examples: what "I won't make it on
Friday" or "wher is my ordr" asks, which MiniLM as it is reads by its words. ``prepare`` writes the model
``MODEL``: the built-in model's GGUF with ``b @ a`` added to each of those weights. Only the intent
matcher uses it (``embeddings.intent_model``); the knowledge base reads with its own changes
(``search_encoder``, prepared by this module's ``prepare``) and the OpenAI-compatible endpoint with MiniLM as
it is. Its embedder is named ``MODEL@version`` (``models.files.embedder_name``), and the matcher keeps
example vectors under that name, so that new changes embed a project's examples again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

BASE = "all-minilm-l6-v2"  # the model changed (models.files.MODELS)
MODEL = "all-minilm-l6-v2-intents"
FILE = Path(__file__).with_name("intent_encoder.npz")
# MiniLM's linear layers that change, as its safetensors name them after "encoder.layer.N."
TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")


@functools.cache
def version(file: Path = FILE) -> str:
    """A digest of the changes (of ``file``): the prepared file and the embedder are named by it, so changed
    weights make a new file and vectors stored with the old ones are not used."""
    return hashlib.sha1(file.read_bytes()).hexdigest()[:10]


def changes(file: Path = FILE) -> dict[str, np.ndarray]:
    """Each changed weight's name (as in the safetensors, with ``.weight``) and what is added to it."""
    with np.load(file, allow_pickle=False) as data:
        return {name.removesuffix(".a") + ".weight": data[name.removesuffix(".a") + ".b"].astype(np.float32)
                @ data[name].astype(np.float32) for name in data.files if name.endswith(".a")}


def prepare(base: Path, dest: Path, file: Path = FILE) -> None:
    """Write ``dest``: the built-in model's GGUF (``base``) with ``changes`` (of ``file``) added to its f16
    weights in place (a copy, renamed into place when written)."""
    import gguf

    added = changes(file)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # unique: two processes may prepare at once
    shutil.copyfile(base, tmp)
    try:
        reader = gguf.GGUFReader(tmp, "r+")
        layers = 1 + max(int(name.split(".")[2]) for name in added)
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, layers)
        tensors = {t.name: t for t in reader.tensors}
        for name, delta in added.items():
            tensor = tensors[names.get_name(name, try_suffixes=(".weight",))]
            if tensor.data.shape != delta.shape or tensor.data.dtype != np.float16:
                raise ValueError(f"{base.name}: {tensor.name} is not the f16 {delta.shape} weight these changes are for")
            tensor.data[...] = (tensor.data.astype(np.float32) + delta).astype(np.float16)
        reader.data.flush()
        del reader, tensors
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
