"""The WhatsApp area: template sends through an org's (or agent's) Cloud API connection."""

from __future__ import annotations

from ..area import Area
from . import api, migrations
from .cli import whatsapp

AREA = Area(
    name="whatsapp",
    routes=tuple(api.ROUTES),
    migrations=(migrations.migrations,),
    commands=(whatsapp,),
)
