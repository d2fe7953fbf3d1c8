"""The admin area: the org's keys and settings over HTTP, the console, and the API docs."""

from __future__ import annotations

from ..area import Area
from . import api

AREA = Area(name="admin", routes=tuple(api.ROUTES))
