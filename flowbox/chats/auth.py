"""Chats API authentication: ``X-API-KEY: <api key>``, or ``Authorization: Bearer <token>`` with an
OAuth2 access token issued for an API key by ``POST /oauth/token`` (client-credentials grant,
RFC 6749 section 4.4: the API key is the client secret). Tokens expire, are stored as SHA-256
hashes only, and stop working when their key is revoked.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import urllib.parse

from litestar import Request, Response, post

from ..apidoc import body_doc, doc
from ..errors import ApiError, Problem, error
from ..http import optional_json_body, services_of
from ..ids import iso
from ..orgs import Principal, authenticate, hash_key
from .schemas import TOKEN_BODY, AccessToken, OAuthError

TOKEN_PREFIX = "fbt_"
BEARER_CHALLENGE = 'Bearer realm="flowbox"'


async def issue_token(store, principal: Principal, ttl: int) -> str:
    """A new access token acting for the principal's key; expired tokens are swept meanwhile."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    async with store.write() as tx:
        await tx.execute("DELETE FROM oauth_tokens WHERE expires_at < ?", [now])
        await tx.execute(
            "INSERT INTO oauth_tokens (token_hash, key_id, org_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            [hash_key(token), principal.key_id, principal.org_id, iso(), now + ttl],
        )
    return token


async def token_principal(store, token: str) -> Principal:
    """Who a bearer token acts for; a 401 when it is unknown, expired or its key was revoked."""
    row = await store.fetchone(
        "SELECT t.org_id, t.key_id, t.expires_at, k.revoked_at FROM oauth_tokens t "
        "JOIN api_keys k ON k.id = t.key_id WHERE t.token_hash = ?", [hash_key(token)],
    )
    if row is None or row["revoked_at"] is not None:
        raise _unauthorized("The access token is not valid.", 'error="invalid_token"')
    if row["expires_at"] <= time.time():
        raise _unauthorized("The access token has expired; request a new one at POST /oauth/token.", 'error="invalid_token"')
    return Principal(org_id=row["org_id"], key_id=row["key_id"])


def _unauthorized(message: str, challenge: str = "") -> Problem:
    exc = error(401, "Unauthorized", message)
    exc.headers["WWW-Authenticate"] = BEARER_CHALLENGE + (", " + challenge if challenge else "")
    return exc


async def require_principal(request: Request) -> Principal:
    """Chats API authentication. Browsers' EventSource and WebSocket cannot set headers, so an
    ``access_token`` query parameter is accepted as well (a token or an API key)."""
    store = services_of(request).store
    key = request.headers.get("x-api-key", "").strip()
    credential = key
    if not key:
        authorization = request.headers.get("authorization", "").strip()
        scheme, _, value = authorization.partition(" ")
        credential = value.strip() if scheme.lower() == "bearer" else authorization
        credential = credential or request.query_params.get("access_token", "").strip()
    if not credential:
        raise _unauthorized("Authentication is required: send your API key in the X-API-KEY header, "
                            "or an access token from POST /oauth/token as 'Authorization: Bearer <token>'.")
    if not key and credential.startswith(TOKEN_PREFIX):
        principal = await token_principal(store, credential)
    else:
        principal = await authenticate(store, credential)
        if principal is None:
            raise _unauthorized("The API key is not valid.", 'error="invalid_token"' if not key else "")
    return principal


# -- the token endpoint ------------------------------------------------------------------------------

def _oauth_error(status: int, code: str, description: str, basic: bool = False) -> ApiError:
    """RFC 6749 section 5.2 error bodies, which OAuth client libraries read."""
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="flowbox"' if basic else BEARER_CHALLENGE
    return ApiError(status, {"error": code, "error_description": description}, headers)


async def _token_params(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
        body = await optional_json_body(
            request, lambda exc: _oauth_error(400, "invalid_request", f"The request body is not valid JSON: {exc}"))
        if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
            raise _oauth_error(400, "invalid_request", "The request body must be an object of string parameters.")
        return body
    raw = await request.body()
    try:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw.strip()))
    except (UnicodeDecodeError, ValueError):
        raise _oauth_error(400, "invalid_request", "The request body must be application/x-www-form-urlencoded.") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise _oauth_error(400, "invalid_request", f"Parameter {name!r} is repeated.")
        params[name] = value
    return params


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _oauth_error(401, "invalid_client", "The Basic credentials are malformed.", basic=True) from None
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)


@post("/oauth/token", summary="OAuth2 token endpoint (client credentials; the API key is the client secret)", status_code=200,
      responses=doc(200, AccessToken, 400, OAuthError, 401, OAuthError),
      operation_class=body_doc(TOKEN_BODY, ("application/x-www-form-urlencoded", "application/json")))
async def token_endpoint(request: Request) -> Response:
    params = await _token_params(request)
    basic = _basic_credentials(request)
    grant = params.get("grant_type")
    if not grant:
        raise _oauth_error(400, "invalid_request", "Parameter 'grant_type' is required.")
    if grant != "client_credentials":
        raise _oauth_error(400, "unsupported_grant_type", "Only grant_type=client_credentials is supported.")
    if basic and "client_secret" in params:
        raise _oauth_error(400, "invalid_request", "Send the client credentials either with Basic authentication or in the body, not both.")
    client_id, secret = basic or (params.get("client_id", ""), params.get("client_secret", ""))
    if not secret:
        raise _oauth_error(401, "invalid_client", "The client secret (your API key) is required.", basic=bool(basic))
    services = services_of(request)
    principal = await authenticate(services.store, secret)
    # client_id is optional; when sent it must be the key's id (`flowbox keys list`).
    if principal is None or (client_id and client_id != principal.key_id):
        raise _oauth_error(401, "invalid_client", "The client credentials are not valid.", basic=bool(basic))
    token = await issue_token(services.store, principal, services.config.oauth_token_ttl)
    body = {"access_token": token, "token_type": "Bearer", "expires_in": services.config.oauth_token_ttl}
    return Response(body, status_code=200, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
