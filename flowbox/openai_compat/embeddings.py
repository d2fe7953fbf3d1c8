"""``POST /v1/embeddings`` on flowbox's embedder (``flowbox.embeddings``): the local MiniLM model by
default, the configured remote endpoint when ``embedding_base_url`` is set. Vectors are
L2-normalised. Embeddings are not charged credits (the Agents API has no such call to match)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..embeddings import get_embedder
from ..errors import ModelError, StartupError
from ..models.files import MODELS
from ..services import Services
from .errors import OpenAIError, bad, unsupported

MAX_INPUTS = 2048
FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


def embedding_model_name(config: Config) -> str:
    """The embedder's name (as ``load_embedder`` gives it), known without loading the model."""
    if config.embedding_base_url:
        return f"remote:{config.embedding_remote_model}"
    name = config.embedding_model
    return name if name in MODELS else Path(name).stem


def _inputs(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise bad("Invalid 'input': expected a non-empty string or a non-empty array of strings.", "input", "invalid_type")
    if not all(isinstance(t, str) for t in texts):
        raise bad("Invalid 'input': token arrays are not supported; send the text itself.", "input", "unsupported_value")
    if len(texts) > MAX_INPUTS:
        raise bad(f"Invalid 'input': at most {MAX_INPUTS} inputs per request.", "input", "array_above_max_length")
    for index, text in enumerate(texts):
        if not text.strip():
            raise bad(f"Invalid 'input[{index}]': the input must be a non-empty string.", f"input[{index}]")
    return texts


def _count_tokens(embedder: Any, texts: list[str]) -> int:
    llm = getattr(embedder, "llm", None)
    if llm is None:  # a remote embedder: an estimate
        return sum(max(1, len(t) // 4) for t in texts)
    return sum(len(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in texts)


async def create(services: Services, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.", None, "invalid_type")
    for name in body:
        if name not in FIELDS:
            raise bad(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    name = embedding_model_name(services.config)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("you must provide a model parameter", "model", "missing_required_parameter")
    if model not in (name, services.config.embedding_remote_model or name):
        raise OpenAIError(404, f"The model `{model}` does not exist or is not an embedding model (flowbox embeds with `{name}`).",
                          code="model_not_found")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad("Invalid value for 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    texts = _inputs(body.get("input"))
    try:
        embedder = await get_embedder(services)
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != embedder.dim:
            raise unsupported("dimensions", f" other than the model's own ({embedder.dim})")
        vectors, n_tokens = await asyncio.gather(embedder.embed(texts), asyncio.to_thread(_count_tokens, embedder, texts))
    except (ModelError, StartupError) as exc:  # the model cannot load, or the remote endpoint failed
        raise OpenAIError(503, f"The embedding model is unavailable: {exc}", type="server_error", code="service_unavailable") from exc
    data = []
    for index, vector in enumerate(vectors):
        value: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode() if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}
