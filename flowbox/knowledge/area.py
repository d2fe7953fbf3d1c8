"""The knowledge area: the Knowledge API, and the search tool and retrieved context agents get."""

from __future__ import annotations

from ..area import Area
from ..http import authenticated
from . import agent_tools, api, migrations
from .cli import knowledge

AREA = Area(
    name="knowledge",
    routes=(authenticated(api.HANDLERS),),  # every route acts for the caller's API key
    migrations=(migrations.migrations,),
    commands=(knowledge,),
    tool_providers=(agent_tools.knowledge_tools,),
    context_providers=(agent_tools.retrieved_context,),
)
