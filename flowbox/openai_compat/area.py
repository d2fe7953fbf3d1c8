"""The OpenAI-compatible area: ``/v1/models``, ``/v1/chat/completions``, ``/v1/embeddings``."""

from __future__ import annotations

from ..area import Area
from ..surfaces import Surface
from . import api, errors, schemas

# Every route acts for the caller's API key (OpenAI's Bearer auth and 401 bodies).
AREA = Area(name="openai_compat", routes=(api.ROUTER,), errors=Surface(("/v1/",), errors.render, schemas.OpenAIErrorBody))
