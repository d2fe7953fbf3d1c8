"""Cross-origin access from browsers.

Two policies, by what authenticates a request:

- The bearer-token APIs (messaging REST v1, ``socket.info`` and the web SDK's calls; each area
  lists its paths in ``Area.browser_paths``) are called from pages on other sites with a token
  the page holds, as the messaging document's own browser example does. A browser never attaches
  such a token by itself, so they answer any origin, and never allow credentials (cookies): a
  page reads only what its token could read anyway. ``cors_origins``, when set, narrows them to
  those origins.
- Everything else (the console's cookie session, the key-admin routes, the other APIs) keeps
  Litestar's CORS: closed unless ``cors_origins`` lists origins.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from litestar.config.cors import CORSConfig

from .config import Config

ASGIApp = Callable[..., Any]
EXPOSED = b"Retry-After, X-Request-ID"  # what a page may read besides the simple headers (429s, support)
PREFLIGHT_MAX_AGE = b"600"


def origins_of(config: Config) -> list[str]:
    return [o.strip() for o in config.cors_origins.split(",") if o.strip()]


def app_cors(config: Config) -> CORSConfig | None:
    """Litestar's CORS for every route: closed unless origins are configured."""
    origins = origins_of(config)
    if not origins:
        return None
    return CORSConfig(allow_origins=origins, allow_methods=["*"], allow_headers=["*"], allow_credentials=False, max_age=600)


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def bearer_cors(config: Config, paths: Iterable[str]) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware answering preflights and marking responses on ``paths`` (prefixes) for any
    origin, or only ``cors_origins`` when set. Placed outside the rate limit, so a 429 is readable."""
    prefixes = tuple(paths)
    listed = origins_of(config)
    any_origin = not listed or "*" in listed
    allowed = {o.encode("latin-1") for o in listed}

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope, receive, send):
            origin = _header(scope, b"origin") if scope["type"] == "http" else None
            if origin is None or not scope.get("path", "").startswith(prefixes):
                return await app(scope, receive, send)
            if not any_origin and origin not in allowed:
                return await app(scope, receive, send)  # no CORS headers: the browser keeps the answer from the page
            cors = [(b"access-control-allow-origin", b"*")] if any_origin else [(b"access-control-allow-origin", origin),
                                                                                   (b"vary", b"Origin")]
            method = _header(scope, b"access-control-request-method")
            if scope["method"] == "OPTIONS" and method is not None:
                headers = [*cors, (b"access-control-allow-methods", method), (b"access-control-max-age", PREFLIGHT_MAX_AGE),
                           (b"content-length", b"0")]
                requested = _header(scope, b"access-control-request-headers")
                if requested:
                    headers += [(b"access-control-allow-headers", requested), (b"vary", b"Access-Control-Request-Headers")]
                await send({"type": "http.response.start", "status": 204, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return

            async def send_with_cors(message):
                if message["type"] == "http.response.start":
                    taken = {b"access-control-allow-origin", b"access-control-allow-credentials", b"access-control-expose-headers"}
                    kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in taken]
                    message["headers"] = [*kept, *cors, (b"access-control-expose-headers", EXPOSED)]
                await send(message)

            await app(scope, receive, send_with_cors)

        return middleware

    return factory
