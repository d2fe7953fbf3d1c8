"""Messaging routes: REST v1 (``/rest/v1/...``, a project's bearer token) and the Management
API (``/v1/projects/...``, the project's token or an org API key). A thin layer over the
plain functions in this package; every error is ``{"status": "error", "message": ...}``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar import Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import File

from .. import orgs
from ..apidoc import EventStream, body_doc, doc, query
from ..http import authenticated, optional_json_body, presented_key, services_of
from ..revocation import REVOKED_MESSAGE, Credential, api_key, project_token, streams_of
from ..sse import EventStream as EventStreamResponse
from ..sse import event, until_revoked
from ..validation import is_number, is_text
from . import conversation, evaluation, flows, inbox, projects, socket_api, sockets, threads, unmatched, webhooks
from .common import int_param, iso_param, rest_error
from .flows import MAX_PAUSE_SECONDS
from .hub import hub_of
from .incoming import check_thread_id, from_rest
from .media import forget_project, get_media, is_multipart, media_response, message_body, read_json, upload_message
from .schemas import (
    FLOW_BODY,
    IMPORT_BODY,
    MESSAGE_BODY,
    MESSAGE_FORM,
    PAUSE_BODY,
    PROJECT_BODY,
    PROJECT_UPDATE_BODY,
    BusinessHoursAnswer,
    Evaluation,
    Explanation,
    Flow,
    FlowExport,
    HistoryAnswer,
    Imported,
    Ok,
    PauseAnswer,
    Project,
    ProjectCreated,
    ThreadSummary,
    ThreadView,
    TokenRotated,
    Unmatched,
    Unsure,
    errors,
)

OK = {"status": "ok"}
Sync = query("true: the answer comes in the response instead of going to the webhook")
IMPORT_MAX_BYTES = 16 << 20


# -- auth and query parameters ----------------------------------------------------------------
# Each API's authentication is its Router's dependency (ROUTES, below): a handler takes what it
# returns, ``project: ProjectOf`` or ``org_id: OrgOf``.

ProjectOf = NamedDependency[dict[str, Any]]
OrgOf = NamedDependency[str]


async def rest_project(request: Request) -> dict[str, Any]:
    """REST v1: the project whose token is presented (``Authorization: Bearer <token>``)."""
    token = presented_key(request)
    if not token:
        raise rest_error(401, "Authorization header with the project's API token is required")
    project = await projects.by_token(services_of(request).store, token)
    if project is None:
        raise rest_error(401, "Invalid API token")
    return project


_CREDENTIAL = "credential"  # the request state's key for what managed_project authenticated with


async def managed_project(request: Request) -> dict[str, Any]:
    """Management API: the project of the path, reached with its own token or an API key of its org.
    What it was reached with is kept for ``credential_of``."""
    project_id = request.path_params["project_id"]
    token = presented_key(request)
    if not token:
        raise rest_error(401, "Authorization header with a bearer token is required")
    store = services_of(request).store
    project = await projects.by_token(store, token)
    if project is not None:
        if project["id"] != project_id:
            raise rest_error(403, "This token belongs to another project")
        request.scope.setdefault("state", {})[_CREDENTIAL] = project_token(orgs.hash_key(token))
        return project
    principal = await orgs.authenticate(store, token)
    if principal is None:
        raise rest_error(401, "Invalid API token")
    request.scope.setdefault("state", {})[_CREDENTIAL] = api_key(principal.key_id)
    project = await projects.get_project(store, project_id)
    if project is None or project["org_id"] != principal.org_id:
        raise rest_error(404, "Project not found")
    return project


async def org_of(request: Request) -> str:
    token = presented_key(request)
    principal = await orgs.authenticate(services_of(request).store, token) if token else None
    if principal is None:
        raise rest_error(401, "An API key of the organisation is required")
    return principal.org_id


def is_true(raw: str | None) -> bool:
    return (raw or "").lower() in ("true", "1", "yes")


async def pause_seconds(request: Request) -> int | None:
    """A pause request's optional body, ``{"secondsToPause": n}``: None pauses until resumed."""
    body = await optional_json_body(request, lambda exc: rest_error(400, f"The request body is not valid JSON: {exc}"))
    seconds = body.get("secondsToPause") if isinstance(body, dict) else None
    if not isinstance(body, dict) or (seconds is not None and not is_number(seconds, 0, MAX_PAUSE_SECONDS, integer=True)):
        raise rest_error(400, f"The body must be an object; secondsToPause, when given, a whole number of seconds up to {MAX_PAUSE_SECONDS}")
    return seconds or None


async def _answer(request: Request, sync: str | None, project: dict[str, Any], sync_body: dict[str, Any], event_type: str,
                  payload: dict[str, Any]) -> dict[str, Any]:
    """With ``sync=true`` the answer is ``{"status": "ok", **sync_body}``; without, ``{"status": "ok"}``
    and ``payload`` goes to the webhook as ``event_type`` ("you call us, we'll call you")."""
    if is_true(sync):
        return {"status": "ok", **sync_body}
    services = services_of(request)
    if project.get("webhook_url"):
        async with services.store.write() as tx:
            await webhooks.emit(tx, project, event_type, payload)
        webhooks.wake(services)
    return OK


# -- REST v1 ----------------------------------------------------------------------------------

@post("/rest/v1/messages/{thread_id:str}", status_code=200, request_max_body_size=None, summary="Send a message (text, event, location, media)",
      responses=doc(200, Ok, *errors(400, 401, 413)), operation_class=body_doc(MESSAGE_BODY, form=MESSAGE_FORM))
async def send_message(request: Request, project: ProjectOf, thread_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    check_thread_id(thread_id)
    if is_multipart(request):
        async def parse(fields: dict[str, str], upload: dict[str, Any] | None) -> tuple[dict, Any]:
            return project, from_rest(message_body(fields), upload)

        _, incoming = await upload_message(request, services, parse)
    else:
        incoming = from_rest(await read_json(request, services.config.max_body_bytes))
    await conversation.handle(services, project, thread_id, incoming)
    return OK


@get("/rest/v1/messages/{thread_id:str}", summary="A thread's message history (20 per page)",
     responses=doc(200, HistoryAnswer, *errors(400, 401)))
async def message_history(request: Request, project: ProjectOf, thread_id: FromPath[str],
                          page: query("From 1 (the newest 20 messages)") = None,
                          sync: Sync = None) -> dict[str, Any]:
    services = services_of(request)
    check_thread_id(thread_id)  # threadIds are the client's keys: one that has sent nothing has an empty history
    page_no = int_param(page, "page", 1, 1, threads.MAX_HISTORY_PAGE)
    result = await threads.history_page(services.store, project["id"], thread_id, page_no)
    return await _answer(request, sync, project, {"result": result}, "thread.history", result)


@get("/rest/v1/businesshours", summary="The project's business hours", responses=doc(200, BusinessHoursAnswer, *errors(401)))
async def business_hours(request: Request, project: ProjectOf, sync: Sync = None) -> dict[str, Any]:
    hours = {"businessHours": project["business_hours"]}
    return await _answer(request, sync, project, hours, "businesshours", hours)


@post("/rest/v1/pause/{thread_id:str}", status_code=200, summary="Pause the bot on a thread",
      responses=doc(200, Ok, *errors(400, 401, 413)), operation_class=body_doc(PAUSE_BODY, required=False))
async def pause(request: Request, project: ProjectOf, thread_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    seconds = await pause_seconds(request)
    check_thread_id(thread_id)
    # A human agent may pause a thread before its user has said anything: the pause waits for the first message.
    await conversation.set_paused(services, project, thread_id, True, seconds)
    return OK


@delete("/rest/v1/pause/{thread_id:str}", status_code=200, summary="Resume the bot on a thread", responses=doc(200, Ok, *errors(400, 401)))
async def resume(request: Request, project: ProjectOf, thread_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    check_thread_id(thread_id)
    await conversation.set_paused(services, project, thread_id, False)
    return OK


@get("/rest/v1/pause/{thread_id:str}", summary="Whether the bot is paused on a thread", responses=doc(200, PauseAnswer, *errors(400, 401)))
async def pause_status(request: Request, project: ProjectOf, thread_id: FromPath[str], sync: Sync = None) -> dict[str, Any]:
    services = services_of(request)
    check_thread_id(thread_id)
    paused = threads.paused_now(await threads.get_thread(services.store, project["id"], thread_id))  # a new thread: not paused
    # ``isPaued`` is the document's spelling, which existing clients read; ``isPaused`` is offered beside it.
    status = {"isPaued": paused, "isPaused": paused, "threadId": thread_id}
    return await _answer(request, sync, project, status, "control.status", status)


@get("/rest/v1/media/{media_id:str}", summary="An uploaded media file (the id is the capability)", responses=doc(*errors(404)))
async def media_file(request: Request, media_id: FromPath[str]) -> File:
    media = await get_media(services_of(request).store, media_id)
    if media is None or not Path(media["path"]).is_file():
        raise rest_error(404, "Media not found")
    return media_response(media)  # never inline as a type that can run script on this origin


# -- Management API: projects ----------------------------------------------------------------

@get("/v1/projects", summary="List the organisation's messaging projects", responses=doc(200, list[Project], *errors(401)))
async def list_projects(request: Request, org_id: OrgOf) -> list[dict[str, Any]]:
    return [projects.public(p) for p in await projects.list_projects(services_of(request).store, org_id)]


@post("/v1/projects", status_code=201, summary="Create a messaging project (its token is shown once)",
      responses=doc(201, ProjectCreated, *errors(400, 401, 413)), operation_class=body_doc(PROJECT_BODY))
async def create_project(request: Request, org_id: OrgOf) -> dict[str, Any]:
    services = services_of(request)
    body = await read_json(request, services.config.max_body_bytes)
    if not isinstance(body, dict):
        raise rest_error(400, "The request body must be a JSON object")
    settings = {k: v for k, v in body.items() if k != "name"}
    project, token = await projects.create_project(services.store, org_id, body.get("name"), settings,
                                                   allow_private=services.config.allow_private_outbound)
    return {**projects.public(project), "token": token}


@get("/v1/projects/{project_id:str}", summary="A messaging project and its settings", responses=doc(200, Project, *errors(401, 403, 404)))
async def get_project(request: Request, project: ProjectOf, project_id: FromPath[str]) -> dict[str, Any]:
    return projects.public(project)


@patch("/v1/projects/{project_id:str}", summary="Change a project's settings",
       responses=doc(200, Project, *errors(400, 401, 403, 404, 413)), operation_class=body_doc(PROJECT_UPDATE_BODY))
async def update_project(request: Request, project: ProjectOf, project_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    body = await read_json(request, services.config.max_body_bytes)
    project = await projects.update_project(services.store, project_id, body, allow_private=services.config.allow_private_outbound)
    if project is None:
        raise rest_error(404, "Project not found")
    return projects.public(project)


@delete("/v1/projects/{project_id:str}", status_code=200, summary="Delete a project with its flows and threads",
        responses=doc(200, Ok, *errors(401, 403, 404)))
async def delete_project(request: Request, project: ProjectOf, project_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    await projects.delete_project(services.store, project_id)
    conversation.forget(services, project_id)
    await asyncio.to_thread(forget_project, services.config.data_path, project_id)
    return OK


@post("/v1/projects/{project_id:str}/token", status_code=200, summary="Replace the project's API token",
      responses=doc(200, TokenRotated, *errors(401, 403, 404)))
async def rotate_token(request: Request, project: ProjectOf, project_id: FromPath[str]) -> dict[str, Any]:
    return {"status": "ok", "token": await projects.rotate_token(services_of(request).store, project_id)}


# -- Management API: flows -------------------------------------------------------------------

@get("/v1/projects/{project_id:str}/flows", summary="List all Flows (limit, skip)", responses=doc(200, list[Flow], *errors(400, 401, 403, 404)))
async def list_flows(request: Request, project: ProjectOf, project_id: FromPath[str],
                     limit: query("At most this many, 1 to 1000") = None,
                     skip: query("Skip this many first") = None) -> list[dict[str, Any]]:
    count = int_param(limit, "limit", None, 1, 1000)
    skipped = int_param(skip, "skip", 0, 0, 1_000_000_000)
    return [flows.list_view(f) for f in await flows.list_flows(services_of(request).store, project_id, count, skipped)]


@post("/v1/projects/{project_id:str}/flows", status_code=201, summary="Create a Flow",
      responses=doc(201, Flow, *errors(400, 401, 403, 404, 409, 413)), operation_class=body_doc(FLOW_BODY))
async def create_flow(request: Request, project: ProjectOf, project_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    flow = await flows.create_flow(services.store, project_id, await read_json(request, services.config.max_body_bytes))
    conversation.prepare_soon(services, project)
    return flow


@post("/v1/projects/{project_id:str}/flows/import", status_code=200, request_max_body_size=None,
      summary="Import Flows (one, a list, or an export); replace=true deletes flows not in it",
      responses=doc(200, Imported, *errors(400, 401, 403, 404, 409, 413)), operation_class=body_doc(IMPORT_BODY))
async def import_flows(request: Request, project: ProjectOf, project_id: FromPath[str],
                       replace: query("true: the project's flows that the document does not hold are deleted") = None) -> dict[str, Any]:
    services = services_of(request)
    document = await read_json(request, IMPORT_MAX_BYTES)
    imported = await flows.import_flows(services.store, project_id, document, is_true(replace))
    conversation.prepare_soon(services, project)
    return {"status": "ok", **imported}


@get("/v1/projects/{project_id:str}/flows/export", summary="Export every Flow of the project", responses=doc(200, FlowExport, *errors(401, 403, 404)))
async def export_flows(request: Request, project: ProjectOf, project_id: FromPath[str]) -> dict[str, Any]:
    return await flows.export_flows(services_of(request).store, project_id)


@get("/v1/projects/{project_id:str}/flows/{flow_id:str}", summary="A Flow", responses=doc(200, Flow, *errors(401, 403, 404)))
async def get_flow(request: Request, project: ProjectOf, project_id: FromPath[str], flow_id: FromPath[str]) -> dict[str, Any]:
    flow = await flows.get_flow(services_of(request).store, project_id, flow_id)
    if flow is None:
        raise rest_error(404, "Flow not found")
    return flow


@put("/v1/projects/{project_id:str}/flows/{flow_id:str}", summary="Replace a Flow",
     responses=doc(200, Flow, *errors(400, 401, 403, 404, 409, 413)), operation_class=body_doc(FLOW_BODY))
async def replace_flow(request: Request, project: ProjectOf, project_id: FromPath[str], flow_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    flow = await flows.replace_flow(services.store, project_id, flow_id, await read_json(request, services.config.max_body_bytes))
    if flow is None:
        raise rest_error(404, "Flow not found")
    conversation.prepare_soon(services, project)
    return flow


@delete("/v1/projects/{project_id:str}/flows/{flow_id:str}", status_code=200, summary="Delete a Flow",
        responses=doc(200, Ok, *errors(401, 403, 404)))
async def delete_flow(request: Request, project: ProjectOf, project_id: FromPath[str], flow_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    if not await flows.delete_flow(services.store, project_id, flow_id):
        raise rest_error(404, "Flow not found")
    conversation.prepare_soon(services, project)
    return OK


# -- Management API: threads (the inbox) ------------------------------------------------------
# What a human agent needs with an org's API key (REST v1 takes only the project's token).

@get("/v1/projects/{project_id:str}/threads", summary="The project's threads, most recently active first",
     responses=doc(200, list[ThreadSummary], *errors(400, 401, 403, 404)))
async def list_threads(request: Request, project: ProjectOf, project_id: FromPath[str],
                       only: query("paused, handover (paused by a HANDOVER action) or outsideHours (the user's latest "
                                   "message came outside business hours)") = None,
                       limit: query("At most this many, 1 to 200 (50)") = None,
                       skip: query("Skip this many first") = None) -> list[dict[str, Any]]:
    if only is not None and only not in inbox.FILTERS:
        raise rest_error(400, f"only must be one of {', '.join(inbox.FILTERS)}")
    count = int_param(limit, "limit", 50, 1, 200)
    skipped = int_param(skip, "skip", 0, 0, 1_000_000_000)
    return await inbox.list_threads(services_of(request).store, project, only, count, skipped)


@get("/v1/projects/{project_id:str}/threads/{thread_id:str}", summary="A thread: its state and a page of its history",
     responses=doc(200, ThreadView, *errors(400, 401, 403, 404)))
async def get_thread(request: Request, project: ProjectOf, project_id: FromPath[str], thread_id: FromPath[str],
                     page: query("From 1 (the newest 20 messages)") = None) -> dict[str, Any]:
    check_thread_id(thread_id)
    page_no = int_param(page, "page", 1, 1, threads.MAX_HISTORY_PAGE)
    return await inbox.thread_view(services_of(request).store, project, thread_id, page_no)


@post("/v1/projects/{project_id:str}/threads/{thread_id:str}/pause", status_code=200, summary="Take a thread over: pause the bot",
      responses=doc(200, Ok, *errors(400, 401, 403, 404, 413)), operation_class=body_doc(PAUSE_BODY, required=False))
async def take_over(request: Request, project: ProjectOf, project_id: FromPath[str], thread_id: FromPath[str]) -> dict[str, Any]:
    seconds = await pause_seconds(request)
    check_thread_id(thread_id)
    await conversation.set_paused(services_of(request), project, thread_id, True, seconds)
    return OK


@delete("/v1/projects/{project_id:str}/threads/{thread_id:str}/pause", status_code=200, summary="Hand a thread back: resume the bot",
        responses=doc(200, Ok, *errors(400, 401, 403, 404)))
async def hand_back(request: Request, project: ProjectOf, project_id: FromPath[str], thread_id: FromPath[str]) -> dict[str, Any]:
    check_thread_id(thread_id)
    await conversation.set_paused(services_of(request), project, thread_id, False)
    return OK


@post("/v1/projects/{project_id:str}/threads/{thread_id:str}/messages", status_code=200,
      summary="Reply as a human agent (the REST v1 message body; it is sent as the moderator)",
      responses=doc(200, Ok, *errors(400, 401, 403, 404, 413)), operation_class=body_doc(MESSAGE_BODY))
async def agent_reply(request: Request, project: ProjectOf, project_id: FromPath[str], thread_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    check_thread_id(thread_id)
    incoming = from_rest(await read_json(request, services.config.max_body_bytes))
    if incoming.kind not in ("text", "location"):
        raise rest_error(400, "A human agent's reply here is text or a location (media goes through REST v1 uploads)")
    incoming.originator = {"name": "agent", **incoming.originator, "role": "moderator"}
    await conversation.moderator_reply(services, project, thread_id, incoming)
    return OK


def credential_of(request: Request) -> Credential:
    """What a Management API request was authenticated with (its project's token or an org key, as
    ``managed_project`` found): a stream it opens closes when that is revoked."""
    return request.scope["state"][_CREDENTIAL]


LIVE_PING_SECONDS = 15.0


@get("/v1/projects/{project_id:str}/events", summary="Server-Sent Events: everything that happens on the project's threads",
     responses=doc(200, EventStream, *errors(401, 403, 404)))
async def project_events(request: Request, project: ProjectOf, project_id: FromPath[str]) -> EventStreamResponse:
    """Each event is named by its type (``message.delivered``, ``message.received``, ``control.pause``,
    ``control.resume``, ``control.handover``, ``agent.typing``, ``activity.user.typing``) and carries
    ``{"type", "payload", "threadId"}``, as sockets receive them; a comment every 15 s of quiet."""
    services = services_of(request)
    hold = streams_of(services).holder(credential_of(request))

    async def events():
        with hub_of(services).subscribe(project["id"]) as subscription:
            yield ": following\n\n"  # the response starts now: whatever happens from here on is sent
            while True:
                try:
                    item = await asyncio.wait_for(subscription.get(), LIVE_PING_SECONDS)
                except asyncio.TimeoutError:
                    yield ": ping\n\n"
                    continue
                yield event(item, item.get("type"))

    farewell = event({"status": "error", "message": REVOKED_MESSAGE}, "error")
    return EventStreamResponse(until_revoked(events(), hold, farewell))


@get("/v1/projects/{project_id:str}/explain", summary="Why a text would match what it matches (nothing is stored)",
     responses=doc(200, Explanation, *errors(400, 401, 403, 404)))
async def explain(request: Request, project: ProjectOf, project_id: FromPath[str],
                  text: query("The user's text (at most 1000 characters)") = None,
                  threadId: query("Explain it on this thread as it stands (its step, pending slot, params)") = None,  # noqa: N803
                  ) -> dict[str, Any]:
    if text is None or not is_text(text, 1000):
        raise rest_error(400, "text is required: a string of at most 1000 characters")
    if threadId is not None:
        check_thread_id(threadId)
    return await inbox.explain(services_of(request), project, threadId, text)


SINCE = f"ISO 8601: count messages from then on (the last {unmatched.DAYS} days)"
LIMIT = f"At most this many texts, 1 to {unmatched.MAX_LIMIT} (20)"


@get("/v1/projects/{project_id:str}/unmatched", summary="What customers wrote that no intent matched, the most frequent first",
     responses=doc(200, Unmatched, *errors(400, 401, 403, 404)))
async def list_unmatched(request: Request, project: ProjectOf, project_id: FromPath[str],
                         since: query(SINCE) = None, limit: query(LIMIT) = None) -> dict[str, Any]:
    return await _misread(request, project, since, limit, unmatched.unmatched)


@get("/v1/projects/{project_id:str}/unsure", summary="What intents matched with little confidence, the most frequent first",
     responses=doc(200, Unsure, *errors(400, 401, 403, 404)))
async def list_unsure(request: Request, project: ProjectOf, project_id: FromPath[str],
                      since: query(SINCE) = None, limit: query(LIMIT) = None) -> dict[str, Any]:
    return await _misread(request, project, since, limit, unmatched.unsure)


async def _misread(request: Request, project: dict[str, Any], since: str | None, limit: str | None, listing) -> dict[str, Any]:
    services = services_of(request)
    start = unmatched.default_since() if since is None else iso_param(since, "since")
    report = await listing(services.store, project, start, int_param(limit, "limit", 20, 1, unmatched.MAX_LIMIT))
    await unmatched.suggest(services, project, report["texts"])
    return report


EVALUATE_BODY = {
    "type": "object", "required": ["cases"],
    "properties": {"cases": {"type": "array", "minItems": 1, "maxItems": evaluation.MAX_CASES, "items": {
        "type": "object", "required": ["text", "expected"],
        "properties": {"text": {"type": "string", "maxLength": evaluation.MAX_TEXT},
                       "expected": {"type": "string", "description": "an INTENT step's id, or UNKNOWN"},
                       "context": {"type": "string", "description": "match as on a thread at this step (its children first)"}}}}},
}


@post("/v1/projects/{project_id:str}/evaluate", status_code=200,
      summary="How the flows match test messages and the steps they should reach (nothing is stored)",
      responses=doc(200, Evaluation, *errors(400, 401, 403, 404, 413)), operation_class=body_doc(EVALUATE_BODY))
async def evaluate(request: Request, project: ProjectOf, project_id: FromPath[str]) -> dict[str, Any]:
    services = services_of(request)
    return await evaluation.evaluate(services, project, await read_json(request, services.config.max_body_bytes))


# Bearer-token APIs that web pages on any site call (the document's browser example, the web SDK):
# answered for any origin, without credentials, unless ``cors_origins`` narrows them (flowbox/cors.py).
BROWSER_PATHS = ("/rest/v1/", "/socket.info", "/thread.")

ROUTES = [
    # The socket channel lives in its own modules (``socket_api``: /socket.info and the SDK's calls;
    # ``sockets``: /ws/<token>). Public: the SDK's calls authorize by clientId and a thread's secret, each
    # in its own order of checks; the socket's single-use URL is its credential.
    *socket_api.ROUTES, *sockets.ROUTES,
    authenticated([send_message, message_history, business_hours, pause, resume, pause_status], rest_project, provides="project"),
    media_file,  # public: the media id is the capability
    authenticated([list_projects, create_project], org_of, provides="org_id"),
    authenticated([get_project, update_project, delete_project, rotate_token,
                   list_flows, create_flow, import_flows, export_flows, get_flow, replace_flow, delete_flow,
                   list_threads, get_thread, take_over, hand_back, agent_reply, project_events, explain, evaluate,
                   list_unmatched, list_unsure],
                  managed_project, provides="project"),
]
