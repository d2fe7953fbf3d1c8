"""The Messaging, Management and web-SDK routes' request and response bodies, for the OpenAPI
document at `/schema` (the handlers build plain dicts; the fuzz test checks real responses
against these). Every error of these routes is ``{"status": "error", "message": ...}``."""

# (No `from __future__ import annotations`: TypedDict must see NotRequired[...] evaluated.)
from typing import Any, NotRequired, TypedDict

from ..apidoc import obj, string
from .flows import MAX_PAUSE_SECONDS


class Ok(TypedDict):
    """Done"""

    status: str  # "ok"


class Problem(TypedDict):
    path: str
    message: str


class RestError(TypedDict):
    """The messaging error shape (`errors`: every problem of an invalid flow)"""

    status: str  # "error"
    message: str
    errors: NotRequired[list[Problem]]


def errors(*statuses: int) -> list:
    """``doc(...)`` items: each status with the messaging error shape."""
    items: list = []
    for status in statuses:
        items += [status, RestError]
    return items


class HistoryGroup(TypedDict):
    originator: dict[str, Any]
    messages: list[dict[str, Any]]


class History(TypedDict):
    history: list[HistoryGroup]  # runs of messages by the same originator, oldest first
    threadId: str
    page: int
    pages: int


class HistoryAnswer(TypedDict):
    """`result` with sync=true; otherwise the history goes to the webhook (`thread.history`)"""

    status: str
    result: NotRequired[History]


class BusinessHoursAnswer(TypedDict):
    """`businessHours` with sync=true; otherwise they go to the webhook (`businesshours`)"""

    status: str
    businessHours: NotRequired[Any]


class PauseAnswer(TypedDict):
    """With sync=true the status (`isPaued` is the published spelling, `isPaused` beside it); otherwise it goes to the webhook"""

    status: str
    isPaued: NotRequired[bool]
    isPaused: NotRequired[bool]
    threadId: NotRequired[str]


class Project(TypedDict):
    """The project (its token never; its webhook verify token masked)"""

    projectId: str
    orgId: str
    name: str
    clientId: str
    tokenPrefix: str
    webhookUrl: str | None
    webhookVerifyToken: str | None
    agentId: str | None
    businessHours: Any
    outsideHoursEvent: str | None
    intentThreshold: float | None
    createdAt: str
    updatedAt: str


class ProjectCreated(Project):
    """The new project: `token` (for REST v1 and this project's Management API) is shown here once"""

    token: str


class TokenRotated(TypedDict):
    """The new token, shown once; the old one no longer works"""

    status: str
    token: str


class Flow(TypedDict):
    """The Flow"""

    flowId: str
    projectId: str
    brainId: str
    title: str
    group: str
    createdAt: str
    disabled: bool
    steps: list[dict[str, Any]]  # Step objects (in lists, their actions and intent by id)


class FlowExport(TypedDict):
    """Every Flow of the project, complete (POST it to .../flows/import)"""

    flows: list[Flow]


class Imported(TypedDict):
    """The flowIds created, updated and (with replace=true) deleted"""

    status: str
    created: list[str]
    updated: list[str]
    deleted: list[str]


class LastMessage(TypedDict):
    role: str  # user, bot or moderator
    text: str
    createdAt: str


class ThreadSummary(TypedDict):
    """A thread as the inbox lists it"""

    threadId: str
    paused: bool
    pausedUntil: str | None  # a timed pause ends then; null: until resumed (or not paused)
    handover: bool           # paused by a HANDOVER action
    outsideHours: bool       # the user's latest message came outside business hours
    user: dict[str, Any]     # name, userId as the user's client gave them
    messages: int
    lastMessage: LastMessage | None
    stepId: str | None       # the step the thread is in
    params: dict[str, Any]
    createdAt: str | None
    updatedAt: str | None


class ThreadView(ThreadSummary):
    """The thread and a page of its history (as REST v1 history's `result`)"""

    history: History


class IntentScore(TypedDict):
    stepId: str
    title: str
    exact: bool                # an example equals the text (case, punctuation, spaces and chat shorthand aside)
    example: str | None        # the closest example by meaning
    similarity: float | None   # its cosine
    confidence: float | None   # the learned model's (1.0 for an exact example)


class Explanation(TypedDict):
    """What the engine would do with the text on that thread; nothing is stored"""

    threadId: str | None
    text: str
    paused: bool                     # the bot is paused there: a human answers instead
    context: dict[str, Any] | None   # the step the thread is in
    step: dict[str, Any] | None      # the step matched: stepId, title, type
    flow: dict[str, Any] | None
    confidence: float | None
    threshold: float
    method: str                      # learned, similarity (the model is not ready) or exact (no embedding model)
    explanation: str                 # the reasons, in words
    intents: list[IntentScore]       # the intents weighed, most likely first (at most 5)
    offTopic: dict[str, Any] | None  # the off-topic phrasing that put the text out of scope: phrasing, similarity, example, exampleSimilarity
    params: dict[str, Any]           # the thread's params afterwards
    replies: list[str]
    handover: bool


class UnmatchedSuggestion(TypedDict):
    stepId: str
    title: str
    confidence: float | None   # the learned model's (before it is ready: the closest example's)
    example: str | None        # the intent's closest example by meaning
    similarity: float | None   # its cosine


class UnmatchedText(TypedDict):
    text: str                                # as it came last
    unknownStepId: str | None                # the UNKNOWN step that answered it (the top level's, or one under a step's question); None: none did
    count: int                               # messages with this text (case, punctuation, spaces and chat shorthand aside)
    threads: int                             # threads they came on
    lastAt: str
    context: dict[str, Any] | None           # the step whose question it answered (its UNKNOWN step's parent); None: the top level
    now: dict[str, Any] | None               # the step it matches now there: stepId, title, type
    suggestion: UnmatchedSuggestion | None   # the intent the matcher finds likeliest there (the context's children first)
    offTopic: str | None                     # at the top level, the off-topic phrasing that puts it out of scope, if one does


class Unmatched(TypedDict):
    """The user texts an UNKNOWN step answered, the most frequent first"""

    since: str        # the window's start
    messages: int     # unmatched messages counted (the most recent 10,000 at most)
    distinct: int     # distinct texts among them
    texts: list[UnmatchedText]


class UnsureText(TypedDict):
    text: str                                # as it came last
    matched: dict[str, Any]                  # the step it matched (stepId, title), as stored
    confidence: float                        # that match's, below 0.9 (unmatched.UNSURE)
    count: int                               # messages with this text matched to that step
    threads: int
    lastAt: str
    context: dict[str, Any] | None           # the step whose question it answered (the matched step's parent); None: the top level
    now: dict[str, Any] | None               # the step it matches now there: stepId, title, type
    suggestion: UnmatchedSuggestion | None   # the intent the matcher finds likeliest there now
    alternative: UnmatchedSuggestion | None  # the likeliest intent other than the one it matched
    offTopic: str | None                     # at the top level, the off-topic phrasing that puts it out of scope, if one does


class Unsure(TypedDict):
    """The user texts an intent matched with little confidence (below 0.9), the most frequent first"""

    since: str
    below: float      # the confidence below which a match is listed (0.9)
    messages: int     # such matches counted (the most recent 10,000 at most)
    distinct: int
    texts: list[UnsureText]


class EvaluationCase(TypedDict):
    text: str
    expected: str            # the INTENT step's id the text should reach, or UNKNOWN
    context: str | None      # matched on a thread at this step (its children first); None: a new thread
    stepId: str              # what it reached: an INTENT step's id, or UNKNOWN
    confidence: float | None
    right: bool


class EvaluationShare(TypedDict):
    cases: int
    right: int
    accuracy: float | None   # right / cases; None without cases


class EvaluationIntent(TypedDict):
    stepId: str                              # an intent expected, or UNKNOWN
    title: str
    cases: int
    right: int
    accuracy: float
    confusedWith: list[dict[str, Any]]       # where its other cases went: stepId, cases; most first


class Evaluation(TypedDict):
    """How the project's flows match the cases given; nothing is stored"""

    cases: int
    right: int
    accuracy: float
    threshold: float
    method: str                        # learned, similarity (no model: too few examples) or exact (no embedding model)
    inScope: EvaluationShare           # the cases expected to reach an intent
    outOfScope: EvaluationShare        # the cases expected UNKNOWN
    intents: list[EvaluationIntent]    # per step expected, the worst first
    results: list[EvaluationCase]      # per case, in the order given


class Endpoint(TypedDict):
    endpoint: str  # ws:// or wss://, single use


class SocketInfo(TypedDict):
    """The websocket URL; `secret` when the SDK starts a thread (it presents it from then on)"""

    status: str
    secret: NotRequired[str]
    payload: Endpoint


class ThreadHistory(TypedDict):
    """The thread's history"""

    status: str
    payload: History


class Unnoticed(TypedDict):
    threadId: str
    unnoticed: bool


class UnnoticedAnswer(TypedDict):
    """Whether replies came after the user last noticed the thread"""

    status: str
    payload: Unnoticed


class Delivered(TypedDict):
    """The message as delivered"""

    status: str
    payload: dict[str, Any]


# -- request bodies --------------------------------------------------------------------------------

_ORIGINATOR = obj(name=string(200, min_length=0), role={"type": "string"}, profile={"type": "object"})
MAX_SPEECH = 255  # documented: "The maximum length of a message is 255 characters."
MESSAGE_PAYLOAD = obj(
    ("type",),
    type={"type": "string", "enum": ["text", "event", "location", "media"]},
    speech=string(MAX_SPEECH, min_length=0, description="The text (text messages)"),
    eventName=string(255, description="Event messages"),
    lat={"type": ["number", "string"]}, long={"type": ["number", "string"]},
    mediaType={"type": "string"}, mediaUrl={"type": "string"},
    originator=_ORIGINATOR, traceId={"type": "number"},
    lang={"type": "string"}, timezone={"type": "number", "minimum": -14, "maximum": 14, "description": "UTC offset in hours"},
    params={"type": "object"},
)
MESSAGE_BODY = obj(("payload",), payload=MESSAGE_PAYLOAD, originator=_ORIGINATOR)
MESSAGE_FORM = obj(("payload",), payload=string(description="The JSON message body above, as text"),
                   file={"type": "string", "format": "binary", "description": "With payload.type \"media\""})
PAUSE_BODY = obj(secondsToPause={"type": ["integer", "null"], "minimum": 0, "maximum": MAX_PAUSE_SECONDS,
                                 "description": "Resume by itself after this long; absent, null or 0: until resumed"})
_SETTINGS = dict(
    name=string(200),
    webhookUrl={"type": ["string", "null"], "description": "Where replies and events are POSTed; null or '' to clear"},
    webhookVerifyToken={"type": ["string", "null"], "maxLength": 200, "description": "Sent with every webhook call, and signs it"},
    agentId={"type": ["string", "null"], "description": "An agent of the organisation that answers what no flow matches"},
    businessHours={"description": "Opening hours per weekday, with a timezone"},
    outsideHoursEvent={"type": ["string", "null"], "maxLength": 255, "description": "Event fired outside business hours"},
    intentThreshold={"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
)
PROJECT_BODY = obj(("name",), closed=True, **_SETTINGS)
PROJECT_UPDATE_BODY = obj(closed=True, **_SETTINGS)
_STEP = obj(("stepId", "type"), stepId=string(), type=string(), title={"type": "string"}, contexts={"type": "array"},
            intent={"type": "object"}, actions={"type": "array"}, slot={"type": "object"})
FLOW_BODY = obj(("title", "steps"), flowId=string(), title=string(), group={"type": "string"}, disabled={"type": "boolean"},
                createdAt={"type": "string"}, steps={"type": "array", "minItems": 1, "items": _STEP})
IMPORT_BODY = {"oneOf": [FLOW_BODY, {"type": "array", "items": FLOW_BODY}, obj(("flows",), flows={"type": "array", "items": FLOW_BODY})],
               "description": "One Flow, a list of Flows, or a document from .../flows/export"}
MERGER_BODY = obj(("clientId", "threadId", "mergerKey"), clientId=string(200), threadId=string(), mergerKey=string())
UPLOAD_FORM = obj(("file", "payload"), file={"type": "string", "format": "binary"},
                  payload=string(description="JSON: clientId, threadId and the message (as a socket `message.send`)"))
