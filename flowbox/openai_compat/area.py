"""The OpenAI-compatible area: ``/v1/models``, ``/v1/chat/completions``, ``/v1/embeddings``."""

from __future__ import annotations

from ..area import Area
from . import api

AREA = Area(name="openai_compat", routes=tuple(api.ROUTES))
