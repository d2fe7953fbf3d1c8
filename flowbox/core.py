"""The core area: orgs and keys, models, the outbox, open streams' revocation, metrics, backups,
replication, the status, and the commands that serve and check flowbox. Its migration set holds the
agents' tables too (``flowbox``, named before areas had their own)."""

from __future__ import annotations

from litestar import get

from . import backup as backups
from . import embeddings, metrics, migrations, outbox, replication, revocation, status
from .area import Area
from .cli.backup import backup, restore
from .cli.credits import credits
from .cli.keys import keys, orgs_group
from .cli.models import models
from .cli.outbox import outbox_group
from .cli.selfcheck import selfcheck
from .cli.serve import serve
from .cli.status import status as status_command


@get("/healthz", summary="Liveness check (no authentication)", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


AREA = Area(
    name="core",
    routes=(healthz, status.status_endpoint),
    migrations=(migrations.migrations, outbox.migrations),
    commands=(serve, keys, orgs_group, models, backup, restore, credits, outbox_group, selfcheck, status_command),
    state=(lambda _: revocation.OpenStreams(), lambda services: embeddings.LoadedEmbedders.of(services.config),
           lambda _: outbox.OutboxWorker(), metrics.Metrics,
           lambda _: status.ServerInfo(), lambda services: replication.Replicator(services.config),
           lambda services: backups.BackupSchedule(services.config)),
    on_startup=(revocation.start_sweeper, outbox.start_worker, metrics.start_listener, replication.start, backups.start_schedule,
                status.announce),
    # replication stops last: litestream copies the writes of everything that stopped before it
    on_shutdown=(status.withdraw, metrics.stop_listener, outbox.stop_worker, embeddings.close_embedder, replication.stop),
)
