"""``flowbox serve``: prepare what is missing, print the first key once, and serve every API."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import click

from .. import orgs, replication
from ..errors import StartupError
from ..logs import setup_process_log
from ..metrics import LOOPBACK
from .common import check_data_dir, config_options, fail, with_store


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@click.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8000).")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@click.option("--tls-cert", default=None, help="PEM certificate: serve HTTPS and wss:// (with --tls-key).")
@click.option("--tls-key", default=None, help="PEM private key for --tls-cert.")
@config_options(overrides=("host", "port", "log_level", "tls_cert", "tls_key"))
def serve(cfg):
    """Serve the Agents, Chats and Messaging APIs and the console."""
    setup_process_log(cfg.log_level, cfg.log_format)
    check_data_dir(cfg)
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        fail("TLS needs both --tls-cert and --tls-key")
    for path in filter(None, (cfg.tls_cert, cfg.tls_key)):
        if not os.path.isfile(path):
            fail(f"TLS file not found: {path}")
    if not _port_free(cfg.host, cfg.port):
        fail(f"port {cfg.port} on {cfg.host} is in use; stop the other server or pass --port")
    if cfg.metrics_port and (cfg.metrics_port == cfg.port or not _port_free(LOOPBACK, cfg.metrics_port)):
        fail(f"metrics_port {cfg.metrics_port} on {LOOPBACK} is in use; choose another")
    if cfg.replicate_to:
        try:  # before the model loads: a missing program is one line
            replication.binary()
        except StartupError as exc:
            fail(str(exc))
    from ..models import ModelRegistry

    models = ModelRegistry(cfg)
    try:  # fetch, prepare and load the chat model first: a bad file is one line, with nothing touched
        models.load_local(progress=True)
    except StartupError as exc:
        fail(str(exc))

    org, first_key = with_store(cfg, orgs.ensure_default_org)
    scheme = "https" if cfg.tls_cert else "http"
    url = f"{scheme}://{cfg.host if ':' not in cfg.host else '[' + cfg.host + ']'}:{cfg.port}"
    click.echo(f"flowbox serving on {url}  (data: {cfg.data_path})", err=True)
    click.echo(f"local models run on {models.backend()}", err=True)
    if first_key:
        click.echo(f"First API key for org '{org['name']}' (shown once, store it now): {first_key}", err=True)

    import uvicorn

    from ..app import create_app, uvicorn_options

    app = create_app(cfg, models=models)

    def stop(signum, frame):
        raise KeyboardInterrupt

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: exit 0, not -15.
    signal.signal(signal.SIGTERM, stop)
    try:
        uvicorn.run(app, **uvicorn_options(cfg))
    except StartupError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    asyncio.set_event_loop(None)
