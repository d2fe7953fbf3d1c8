"""The WhatsApp area: template sends through an org's (or agent's) Cloud API connection."""

from __future__ import annotations

from ..area import Area
from ..http import authenticated
from . import api, migrations
from .cli import whatsapp

AREA = Area(
    name="whatsapp",
    routes=(authenticated(api.HANDLERS),),  # every route acts for the caller's API key
    migrations=(migrations.migrations,),
    commands=(whatsapp,),
)
