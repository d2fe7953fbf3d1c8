"""The messaging area: intent-flow projects, REST v1, the socket channel and the Management API."""

from __future__ import annotations

from ..area import Area
from ..surfaces import Surface
from . import api, common, conversation, hub, matcher, media, migrations, schemas, socket_tokens, sockets
from .cli import flows, projects

AREA = Area(
    name="messaging",
    routes=tuple(api.ROUTES),
    migrations=(migrations.migrations,),
    commands=(projects, flows),
    state=(
        lambda _: hub.Hub(), lambda _: sockets.Registry(), lambda _: socket_tokens.Tokens(),
        lambda _: conversation.ThreadLocks(), lambda _: conversation.CompiledFlows(), matcher.Embeddings,
    ),
    on_startup=(media.start_sweeper, conversation.start_watching),
    on_shutdown=(sockets.close_all,),
    browser_paths=api.BROWSER_PATHS,
    # REST v1, the Management API, the web SDK's calls and the socket
    errors=Surface(("/rest/", "/v1/projects", "/socket.info", "/thread.", "/ws/"), common.render, schemas.RestError),
)
