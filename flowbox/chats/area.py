"""The chats area: flows of agents run as chats (the Chats API)."""

from __future__ import annotations

from ..area import Area
from . import api, engine, migrations
from .cli import chatflows, chats

AREA = Area(
    name="chats",
    routes=tuple(api.ROUTES),
    migrations=(migrations.migrations,),
    commands=(chatflows, chats),
    state=(lambda _: engine.Runtime(),),
    on_startup=(engine.resume_chats,),
)
