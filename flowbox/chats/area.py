"""The chats area: flows of agents run as chats (the Chats API)."""

from __future__ import annotations

from ..area import Area
from ..http import authenticated
from . import api, engine, migrations
from .auth import require_principal, token_endpoint
from .cli import chatflows, chats

AREA = Area(
    name="chats",
    # Without the Router's authentication: the token endpoint takes the key as a client secret, and the
    # socket authenticates once accepted, so that its errors arrive as an ``error`` frame and a close code.
    routes=(token_endpoint, authenticated(api.HANDLERS, require_principal), api.chat_socket),
    migrations=(migrations.migrations,),
    commands=(chatflows, chats),
    state=(lambda _: engine.Runtime(),),
    on_startup=(engine.resume_chats,),
)
