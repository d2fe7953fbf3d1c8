"""``flowbox selfcheck`` (hidden): the build's smoke run. It proves, inside the built executable,
that sqlite-vec loads, both models load from the bundle and answer, and the console is packaged."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import click

from ..embeddings import intent_model, knowledge_model
from .common import config_options, fail, handle_errors, json_option, output


def check_sqlite() -> dict:
    from ..db import connect

    conn = connect(":memory:")
    try:
        version = conn.execute("select vec_version()").fetchone()[0]
        distance = conn.execute("select vec_distance_l2(vec_f32('[0,0]'), vec_f32('[3,4]'))").fetchone()[0]
    finally:
        conn.close()
    if distance != 5.0:
        raise AssertionError(f"sqlite-vec computed {distance}, expected 5.0")
    return {"vec_version": version}


def _model_file(cfg, name: str) -> Path:
    from ..models.files import MODELS, bundled_model, ensure_model

    # Inside the executable the models must come from the bundle, never from a download (a model derived
    # from another, the intent encoder, is prepared from the bundled one).
    if getattr(sys, "frozen", False) and not (name in MODELS and MODELS[name].derived_from):
        path = bundled_model(name)
        if path is None:
            raise AssertionError(f"model {name} is not bundled in the executable")
        return path
    return ensure_model(cfg.models_path, name, progress=False)


def check_chat_model(cfg) -> dict:
    from ..models import ChatRequest, generate
    from ..models.local import LocalChatModel

    path = _model_file(cfg, cfg.chat_model)
    model = LocalChatModel(path, name=path.stem, n_ctx=512, n_threads=cfg.threads)
    try:
        request = ChatRequest(messages=[{"role": "user", "content": "Say hello."}], max_tokens=4, temperature=0.0)
        result = asyncio.run(generate(model, request))
    finally:
        model.close()
    if result.completion_tokens < 1:
        raise AssertionError("the chat model generated nothing")
    return {"chat_model": str(path), "completion_tokens": result.completion_tokens}


def check_embedding_model(cfg, name: str, key: str, dim_key: str) -> dict:
    from ..embeddings import LocalEmbedder

    path = _model_file(cfg, name)
    embedder = LocalEmbedder(path, name=name, n_threads=cfg.threads)
    try:
        vector = embedder.embed_sync(["flowbox self check"])[0]
    finally:
        embedder.close()
    if len(vector) != embedder.dim or abs(sum(v * v for v in vector) - 1) > 1e-3:
        raise AssertionError(f"the embedding model {name} returned a malformed vector")
    return {key: str(path), dim_key: len(vector)}


def check_console() -> dict:
    from ..admin.console import STATIC_DIR

    if not (STATIC_DIR / "index.html").exists():
        raise AssertionError(f"console files missing from {STATIC_DIR}")
    return {"console_files": sum(1 for p in STATIC_DIR.rglob("*") if p.is_file())}


CHECKS = [("sqlite-vec", lambda cfg: check_sqlite()), ("chat model", check_chat_model),
          ("embedding model", lambda cfg: check_embedding_model(cfg, cfg.embedding_model, "embedding_model", "dim")),
          ("knowledge embedding model",  # when the knowledge base has a model of its own
           lambda cfg: check_embedding_model(cfg, knowledge_model(cfg), "knowledge_embedding_model", "knowledge_dim")
           if knowledge_model(cfg) != cfg.embedding_model else {}),
          ("intent model",  # MiniLM as the intent matcher reads with it (models/intent_encoder.py)
           lambda cfg: check_embedding_model(cfg, intent_model(cfg), "intent_model", "intent_dim")
           if intent_model(cfg) != cfg.embedding_model else {}),
          ("console", lambda cfg: check_console())]


@click.command(hidden=True)
@json_option
@config_options
@handle_errors
def selfcheck(as_json, cfg):
    """Verify extension loading, model loading and packaged files (the build's smoke run)."""
    report: dict = {"frozen": bool(getattr(sys, "frozen", False))}
    for name, check in CHECKS:
        started = time.perf_counter()
        try:
            report.update(check(cfg))
        except Exception as exc:  # the smoke run reports which part is broken, in one line
            fail(f"selfcheck failed at {name}: {type(exc).__name__}: {exc}")
        report[f"{name.replace(' ', '_').replace('-', '_')}_seconds"] = round(time.perf_counter() - started, 3)
    output(report, as_json)
