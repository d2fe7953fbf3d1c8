"""HTTP side of the socket channel: ``GET /socket.info`` (the document's query parameters, or the
JS SDK's ``x-flowai-*`` headers) and the SDK's own calls ``thread.history``, ``thread.unnoticed``,
``thread.upload`` and ``thread.merger``. Errors are the messaging shape,
``{"status": "error", "message": ...}``; the SDK treats 400/401/403 as final and retries others.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from ..apidoc import body_doc, doc, query
from ..http import presented_key, services_of
from ..orgs import hash_key
from ..services import Services
from . import conversation, projects, socket_threads, threads
from .common import int_param, public_base, rest_error
from .incoming import check_thread_id
from .media import is_multipart, message_body, read_json, upload_message
from .schemas import MERGER_BODY, UPLOAD_FORM, Delivered, SocketInfo, ThreadHistory, UnnoticedAnswer, errors
from .socket_frames import incoming_from_send
from .socket_tokens import Grant, tokens_of
from .sockets import registry_of

UNSET = ("", "null", "undefined")  # how the SDK's fetch sends headers it has no value for


def given(request: Request, name: str, header: str) -> str | None:
    """A value from the query string (the document) or an ``x-flowai-*`` header (the SDK)."""
    value = request.query_params.get(name) or request.headers.get(header)
    return None if value is None or value.strip() in UNSET else value.strip()


async def client_project(request: Request, services: Services, client_id: Any) -> dict[str, Any]:
    if not isinstance(client_id, str) or not client_id or len(client_id) > 200:
        raise rest_error(400, "clientId is required (the project's clientId)")
    project = await projects.project_by_client_id(services.store, client_id)
    if project is None:
        raise rest_error(400, "Unknown clientId")
    return project


async def is_agent(request: Request, services: Services, project: dict[str, Any]) -> bool:
    """Whether the project's own API token is presented (a human agent's tool, not a widget)."""
    token = presented_key(request)
    if not token:
        return False
    owner = await projects.by_token(services.store, token)
    if owner is None or owner["id"] != project["id"]:
        raise rest_error(401, "Invalid API token for this clientId")
    return True


@get("/socket.info", summary="A single-use websocket URL (clientId, sessionId)",
     responses=doc(200, SocketInfo, *errors(400, 401, 403, 429)))
async def socket_info(request: Request, clientId: query("The project's clientId (or the x-flowai-clientid header)") = None,  # noqa: N803
                      sessionId: query("A unique string per connection (or x-flowai-sessionid)") = None,  # noqa: N803
                      threadId: query("The thread to join (or x-flowai-threadid)") = None,  # noqa: N803
                      secret: query("The thread's secret (or x-flowai-secret)") = None) -> Response:
    # The parameters above are declared for the API document; given() reads each with its header fallback.
    services = services_of(request)
    sdk = any(name.startswith("x-flowai-") for name in request.headers.keys())
    project = await client_project(request, services, given(request, "clientId", "x-flowai-clientid"))
    session_id = given(request, "sessionId", "x-flowai-sessionid")
    if session_id is None or len(session_id) > 200 or not session_id.isprintable():
        raise rest_error(400, "sessionId is required: a unique string of at most 200 characters per connection")
    limit = services.config.messaging_socket_max_per_address
    address = request.client.host if request.client else "?"
    if limit and registry_of(services).count(address) >= limit:
        raise rest_error(429, f"Too many open sockets from this address (at most {limit})")
    grant = Grant(project_id=project["id"], dialect="sdk" if sdk else "document",
                  agent=await is_agent(request, services, project))
    if grant.agent:
        grant.token_hash = hash_key(presented_key(request))
    body: dict[str, Any] = {"status": "ok"}
    thread_id = given(request, "threadId", "x-flowai-threadid")
    secret = given(request, "secret", "x-flowai-secret")
    grant.secret_hash = socket_threads.secret_hash(secret)
    if thread_id is not None:
        grant.thread_id = check_thread_id(thread_id)
        issued = socket_threads.new_secret() if sdk and secret is None else None
        if issued is not None:
            grant.secret_hash = socket_threads.secret_hash(issued)
        access = "open" if grant.agent else await socket_threads.authorize(services.store, project["id"], thread_id, grant.secret_hash)
        if access == "denied":
            raise rest_error(403, "This thread belongs to another client (x-flowai-secret does not match)")
        if issued is not None and access == "claimed":
            body["secret"] = issued  # the SDK keeps it and presents it from now on
        elif issued is not None:
            grant.secret_hash = None
    token = tokens_of(services).issue(grant, services.config.messaging_socket_token_ttl_ms)
    scheme, _, rest = public_base(request, services.config).partition("://")
    body["payload"] = {"endpoint": f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/{token}"}
    return Response(body, headers={"Cache-Control": "no-store"})


async def owned_thread(request: Request) -> tuple[Services, dict[str, Any], str]:
    """The SDK's thread calls: clientId, threadId and the secret that owns the thread."""
    services = services_of(request)
    project = await client_project(request, services, given(request, "clientId", "x-flowai-clientid"))
    thread_id = given(request, "threadId", "x-flowai-threadid")
    if thread_id is None:
        raise rest_error(400, "threadId is required")
    check_thread_id(thread_id)
    if not await is_agent(request, services, project):
        secret_sha = socket_threads.secret_hash(given(request, "secret", "x-flowai-secret"))
        if await socket_threads.authorize(services.store, project["id"], thread_id, secret_sha, claim=False) != "owner":
            raise rest_error(403, "This thread's messages are served to the client that started it (x-flowai-secret)")
    return services, project, thread_id


@get("/thread.history", summary="The SDK's history call (x-flowai-clientid, -threadid, -secret)",
     responses=doc(200, ThreadHistory, *errors(400, 401, 403)))
async def thread_history(request: Request, page: query("From 1 (the newest 20 messages)") = None) -> dict[str, Any]:
    services, project, thread_id = await owned_thread(request)
    page_no = int_param(page, "page", 1, 1, threads.MAX_HISTORY_PAGE)
    result = await threads.history_page(services.store, project["id"], thread_id, page_no)
    return {"status": "ok", "payload": result}


@get("/thread.unnoticed", summary="The SDK's call: replies the user has not noticed yet?",
     responses=doc(200, UnnoticedAnswer, *errors(400, 401, 403)))
async def thread_unnoticed(request: Request) -> dict[str, Any]:
    services, project, thread_id = await owned_thread(request)
    unnoticed = await socket_threads.unnoticed(services.store, project["id"], thread_id)
    return {"status": "ok", "payload": {"threadId": thread_id, "unnoticed": unnoticed}}


@post("/thread.merger", status_code=200, summary="The SDK's thread merge call (no merger keys are issued)",
      responses=doc(*errors(400, 403, 404, 413)), operation_class=body_doc(MERGER_BODY, succeeds=False))
async def thread_merger(request: Request) -> dict[str, Any]:
    services = services_of(request)
    body = await read_json(request, 65_536)
    if not isinstance(body, dict):
        raise rest_error(400, "The request body must be a JSON object with clientId, threadId and mergerKey")
    project = await client_project(request, services, body.get("clientId"))
    thread_id = check_thread_id(body.get("threadId"))
    secret_sha = socket_threads.secret_hash(given(request, "secret", "x-flowai-secret"))
    if await socket_threads.authorize(services.store, project["id"], thread_id, secret_sha, claim=False) != "owner":
        raise rest_error(403, "Only the client that started the thread may merge it (x-flowai-secret)")
    # The SDK documents merging as not public yet: there is no way to obtain a mergerKey, so none is valid.
    raise rest_error(404, "Unknown mergerKey")


@post("/thread.upload", status_code=200, request_max_body_size=None, summary="The SDK's file message (multipart: file, payload)",
      responses=doc(200, Delivered, *errors(400, 401, 403, 413)),
      operation_class=body_doc(UPLOAD_FORM, media_types=("multipart/form-data",)))
async def thread_upload(request: Request) -> dict[str, Any]:
    services = services_of(request)
    secret_sha = socket_threads.secret_hash(given(request, "secret", "x-flowai-secret"))
    # Checked before a byte of the file is read: only a client that owns a thread may upload.
    if secret_sha is None or not await socket_threads.secret_known(services.store, secret_sha):
        raise rest_error(401, "x-flowai-secret of a client that started a thread is required")
    if not is_multipart(request):
        raise rest_error(400, "thread.upload takes multipart/form-data with a file and a payload")
    thread_id = ""

    async def parse(fields: dict[str, str], upload: dict[str, Any] | None) -> tuple[dict, Any]:
        nonlocal thread_id
        if upload is None:
            raise rest_error(400, "A file part is required")
        body = message_body(fields)
        project = await client_project(request, services, body.get("clientId") if isinstance(body, dict) else None)
        thread_id = check_thread_id(body.get("threadId"))
        if not await socket_threads.secret_known(services.store, secret_sha, project["id"]):  # a secret of another project
            raise rest_error(403, "x-flowai-secret is not one of this project's clients")
        if await socket_threads.authorize(services.store, project["id"], thread_id, secret_sha) == "denied":
            raise rest_error(403, "This thread belongs to another client (x-flowai-secret does not match)")
        return project, incoming_from_send(body, upload=upload)

    project, incoming = await upload_message(request, services, parse, services.config.messaging_sdk_max_upload_mb)
    outcome = await conversation.handle(services, project, thread_id, incoming)
    return {"status": "ok", "payload": outcome.delivered}


ROUTES = [socket_info, thread_history, thread_unnoticed, thread_merger, thread_upload]
