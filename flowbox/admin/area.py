"""The admin area: the org's keys and settings over HTTP, the console, and the API docs."""

from __future__ import annotations

from ..area import Area
from ..http import authenticated
from . import api, console

AREA = Area(
    name="admin",
    routes=(authenticated(api.HANDLERS), *console.ROUTES),  # the console's pages and files are public
)
