"""The web console (``flowbox/static/``: plain HTML, CSS and JS modules, no build step, no CDN)
at ``/``, and the OpenAPI document rendered by a bundled Swagger UI at ``/schema``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.datastructures import ResponseHeader
from litestar.enums import MediaType
from litestar.file_system import BaseLocalFileSystem
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

# Inside the executable this module lives in sys._MEIPASS/flowbox/admin, beside flowbox/static.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Only our own files: an injected script could not send the API key (kept in sessionStorage) anywhere.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer"}


@get("/", include_in_schema=False, media_type=MediaType.HTML)
async def console_index() -> Response[bytes]:
    # Read per request: tiny, and a changed file shows without a restart during development.
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type=MediaType.HTML, headers=HEADERS)


class StaticDir(BaseLocalFileSystem):
    """A name the OS refuses (a NUL byte, one too long, a file taken for a directory) is a missing
    file, a 404: Litestar turns those errors into a 500."""

    async def info(self, path: Any, **kwargs: Any) -> Any:
        try:
            return await super().info(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(str(path)[:200]) from exc


static_files = create_static_files_router(path="/static", directories=[STATIC_DIR], name="console-static",
                                          include_in_schema=False, file_system=StaticDir())


class SwaggerOffline(OpenAPIRenderPlugin):
    """Swagger UI from the package's own files (Litestar's plugins load it from a CDN)."""

    def __init__(self) -> None:
        super().__init__(path="/", favicon="<link rel='icon' href='/static/favicon.svg'>")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        title = openapi_schema["info"]["title"]
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{self.favicon}
<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
<link rel="stylesheet" href="/static/docs.css">
</head><body><div id="swagger"></div>
<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body></html>""".encode()


API_KEY_SCHEMES = {
    "apiKey": SecurityScheme(type="apiKey", name="Authorization", security_scheme_in="header",
                             description="Agents API: the raw key in `Authorization: <key>`"),
    "xApiKey": SecurityScheme(type="apiKey", name="X-API-KEY", security_scheme_in="header",
                              description="Chats API: `X-API-KEY: <key>`"),
    "bearer": SecurityScheme(type="http", scheme="bearer", description="`Authorization: Bearer <key or token>`"),
}


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="flowbox", version=version, path="/schema",
        description="Agents, Chats and Messaging APIs on a local model. Authorize with an API key "
                    "(the first one is printed by `flowbox serve`; more from `flowbox keys create` or the console).",
        render_plugins=[SwaggerOffline()],
        # The docs page holds the key typed under "Authorize": the console's headers (CSP, no framing) too.
        openapi_router=Router("/schema", route_handlers=[], include_in_schema=False,
                              response_headers=[ResponseHeader(name=k, value=v) for k, v in HEADERS.items()]),
        components=Components(security_schemes=API_KEY_SCHEMES),
        security=[{name: []} for name in API_KEY_SCHEMES],
    )


ROUTES = [console_index, static_files]
