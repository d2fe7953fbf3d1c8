"""The core area: orgs and keys, models, the outbox, open streams' revocation, metrics, backups, and the
commands that serve and check flowbox. Its migration set holds the agents' tables too (``flowbox``,
named before areas had their own)."""

from __future__ import annotations

from litestar import get

from . import embeddings, metrics, migrations, outbox, revocation
from .area import Area
from .cli.backup import backup, restore
from .cli.credits import credits
from .cli.keys import keys, orgs_group
from .cli.models import models
from .cli.outbox import outbox_group
from .cli.selfcheck import selfcheck
from .cli.serve import serve


@get("/healthz", summary="Liveness check (no authentication)", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


AREA = Area(
    name="core",
    routes=(healthz,),
    migrations=(migrations.migrations, outbox.migrations),
    commands=(serve, keys, orgs_group, models, backup, restore, credits, outbox_group, selfcheck),
    state=(lambda _: revocation.OpenStreams(), lambda _: embeddings.LoadedEmbedder(), lambda _: outbox.OutboxWorker(), metrics.Metrics),
    on_startup=(revocation.start_sweeper, outbox.start_worker, metrics.start_listener),
    on_shutdown=(metrics.stop_listener, outbox.stop_worker, embeddings.close_embedder),
)
