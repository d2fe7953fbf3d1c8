"""The chats area: flows of agents run as chats (the Chats API)."""

from __future__ import annotations

from ..area import Area
from ..http import authenticated
from . import api, engine, migrations
from .auth import require_principal
from .cli import chatflows, chats

AREA = Area(
    name="chats",
    routes=(authenticated(api.HANDLERS, require_principal), *api.PUBLIC),
    migrations=(migrations.migrations,),
    commands=(chatflows, chats),
    state=(lambda _: engine.Runtime(),),
    on_startup=(engine.resume_chats,),
)
