"""Prometheus metrics: every metric flowbox exports is named in ``METRICS`` below.

Nothing is counted for the metrics' sake on the request path beyond a few additions: the code
keeps plain numbers where the work happens (``flowbox/stats.py``: the request middleware's timings,
the model queue's waits, each backend's generation timings, the embedder's count, the outbox
worker's outcomes), and the gauges (queue depth, open sockets, the outbox backlog, chats running
and waiting) are read from live state and the database when scraped. Each app has its own
registry, never prometheus_client's process-wide one, so apps in one process never mix.

Two ways in, both off by default: ``metrics_port``, a listener on 127.0.0.1 only (for a Prometheus
on the same box, or one that reaches it through a tunnel), answering without a key; and
``GET /metrics`` on the main port, for ``Authorization: Bearer <metrics_key>``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Iterator

from litestar import Request, Response, get
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import __version__, outbox
from .chats import store as chats_store
from .embeddings import loaded_embedders
from .errors import StartupError, error
from .http import presented_key, services_of
from .models.files import model_of
from .models.pool import pool_servers
from .services import Services
from .stats import BUCKETS, HttpStats, Timings, generation_stats

log = logging.getLogger("flowbox.metrics")

LOOPBACK = "127.0.0.1"
HEAD_SECONDS = 10  # a scraper sends its request at once; a connection that does not is closed
MODEL = ("model",)

# name: (type, help, labels). Counters are exported with "_total" after the name, histograms as
# "_bucket", "_sum" and "_count" series.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "flowbox_build_info": ("gauge", "The running flowbox's version (always 1).", ("version",)),
    "flowbox_http_requests": ("counter", "HTTP requests answered, by method, route template and status.", ("method", "route", "status")),
    "flowbox_http_request_duration_seconds": (
        "histogram", "Time from a request's arrival to the end of its answer (streams: until they close).", ("method", "route", "status")),
    "flowbox_websockets_open": ("gauge", "WebSockets open now, by route template.", ("route",)),
    "flowbox_model_queue_waiting": ("gauge", "Requests waiting for their turn on the model now.", MODEL),
    "flowbox_model_queue_wait_seconds": ("histogram", "How long requests waited for their turn on the model.", MODEL),
    "flowbox_model_generations_running": ("gauge", "Replies being generated now.", MODEL),
    "flowbox_model_time_to_first_token_seconds": (
        "histogram", "Time from asking the model to its first text (waiting for a turn and reading the prompt included).", MODEL),
    "flowbox_model_decode_tokens": (
        "counter", "Tokens generated after each reply's first; over flowbox_model_decode_seconds: tokens per second.", MODEL),
    "flowbox_model_decode_seconds": ("counter", "Time spent generating the tokens of flowbox_model_decode_tokens.", MODEL),
    "flowbox_embeddings": ("counter", "Texts embedded (its rate: embeddings per second).", MODEL),
    "flowbox_outbox_deliveries": (
        "gauge", "Outbox deliveries by status: pending (the backlog), dead (dead letters), delivered (kept for inspection).", ("status",)),
    "flowbox_outbox_attempts": (
        "counter", "Delivery attempts since start by outcome: delivered, retry (failed, tried again later), dead (gave up).", ("outcome",)),
    "flowbox_chats": ("gauge", "Chats (Chats API) running, and waiting for human input.", ("status",)),
    "flowbox_remote_server_up": ("gauge", "A remote model's server is in its pool (1) or out until a probe answers (0).", ("model", "url")),
    "flowbox_remote_server_in_flight": ("gauge", "Requests a remote model's server is answering now.", ("model", "url")),
}
_KINDS = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
CHAT_STATES = {chats_store.RUNNING: "running", chats_store.WAITING: "waiting"}


class Metrics:
    """One app's metrics: its registry, the request stats its middleware fills, and the loopback
    listener while it runs."""

    def __init__(self, services: Services):
        self.services = services
        self.http = HttpStats()
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
        self.listener: asyncio.Server | None = None
        self.database: dict[str, dict[str, int]] = {}  # counts read from the database for the scrape under way

    async def render(self) -> bytes:
        """The text a scraper reads (the database's counts are read first, off the collector)."""
        store = self.services.store
        self.database = {"outbox": await outbox.counts(store), "chats": await chats_store.active_counts(store)}
        return generate_latest(self.registry)


def _family(name: str) -> Metric:
    kind, help_text, labels = METRICS[name]
    return _KINDS[kind](name, help_text, labels=labels)


def _buckets(timings: Timings) -> list[tuple[str, float]]:
    out, seen = [], 0
    for bound, count in zip(BUCKETS, timings.counts):
        seen += count
        out.append((repr(bound), seen))
    out.append(("+Inf", seen + timings.counts[-1]))
    return out


class _Collector:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return (_family(name) for name in METRICS)

    def collect(self) -> Iterator[Metric]:
        metrics, services = self.metrics, self.metrics.services
        family = {name: _family(name) for name in METRICS}
        family["flowbox_build_info"].add_metric([__version__], 1)
        for (method, route, status), timings in list(metrics.http.requests.items()):
            labels = [method, route, str(status)]
            family["flowbox_http_requests"].add_metric(labels, timings.count)
            family["flowbox_http_request_duration_seconds"].add_metric(labels, _buckets(timings), timings.total)
        for route, count in list(metrics.http.open_sockets.items()):
            family["flowbox_websockets_open"].add_metric([route], count)
        for name, backend in services.models.loaded().items():
            scheduler = getattr(backend, "scheduler", None)  # local models queue; remote servers queue on their side
            if scheduler is not None:
                family["flowbox_model_queue_waiting"].add_metric([name], scheduler.waiting)
                family["flowbox_model_queue_wait_seconds"].add_metric([name], _buckets(scheduler.waits), scheduler.waits.total)
            stats = generation_stats(backend)
            family["flowbox_model_generations_running"].add_metric([name], stats.running)
            family["flowbox_model_time_to_first_token_seconds"].add_metric([name], _buckets(stats.first_token), stats.first_token.total)
            family["flowbox_model_decode_tokens"].add_metric([name], stats.decode_tokens)
            family["flowbox_model_decode_seconds"].add_metric([name], stats.decode_seconds)
            for server in pool_servers(backend):
                family["flowbox_remote_server_up"].add_metric([name, server["url"]], int(server["up"]))
                family["flowbox_remote_server_in_flight"].add_metric([name, server["url"]], server["in_flight"])
        for loaded in loaded_embedders(services):
            if loaded.embedder is not None:
                # by model, its version aside: new learned changes keep a dashboard's series
                family["flowbox_embeddings"].add_metric([model_of(loaded.embedder.name)], loaded.embedder.embedded)
        worker = services.state(outbox.OutboxWorker).running
        for outcome in ("delivered", "retry", "dead"):
            family["flowbox_outbox_attempts"].add_metric([outcome], worker.outcomes[outcome] if worker else 0)
        for status, count in metrics.database.get("outbox", {}).items():
            family["flowbox_outbox_deliveries"].add_metric([status], count)
        for status, count in metrics.database.get("chats", {}).items():
            family["flowbox_chats"].add_metric([CHAT_STATES[status]], count)
        return iter(family.values())


# -- the two ways in -------------------------------------------------------------------------------

@get("/metrics", summary="Prometheus metrics (with the metrics_key setting)", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Routed only when ``metrics_key`` is set (``app.create_app``)."""
    services = services_of(request)
    presented = presented_key(request)
    if not presented:
        raise error(401, "Metrics key is required", "Send the metrics_key setting as 'Authorization: Bearer <metrics_key>'")
    if not hmac.compare_digest(presented.encode("utf-8", "replace"), services.config.metrics_key.encode("utf-8", "replace")):
        raise error(401, "Invalid metrics key", "The provided key is not the metrics_key setting")
    return Response(await services.state(Metrics).render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)


async def start_listener(services: Services) -> None:
    """The ``metrics_port`` listener, on loopback whatever ``host`` is."""
    port = services.config.metrics_port
    if not port:
        return
    metrics = services.state(Metrics)
    try:
        metrics.listener = await asyncio.start_server(lambda r, w: _answer(metrics, r, w), LOOPBACK, port)
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {LOOPBACK}:{port}: {exc.strerror or exc}") from None


async def stop_listener(services: Services) -> None:
    metrics = services.state(Metrics)
    listener, metrics.listener = metrics.listener, None
    if listener is not None:
        listener.close()
        await listener.wait_closed()


async def _answer(metrics: Metrics, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One HTTP/1.1 request, one answer, then the connection closes: all a scraper needs."""
    try:
        async with asyncio.timeout(HEAD_SECONDS):
            head = await reader.readuntil(b"\r\n\r\n")  # at most the reader's limit (64 KiB)
        method, target = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
        if target.split("?", 1)[0] != "/metrics":
            status, body, kind = "404 Not Found", b"Metrics are at /metrics\n", "text/plain; charset=utf-8"
        elif method not in ("GET", "HEAD"):
            status, body, kind = "405 Method Not Allowed", b"GET /metrics\n", "text/plain; charset=utf-8"
        else:
            status, body, kind = "200 OK", await metrics.render(), CONTENT_TYPE_PLAIN_0_0_4
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + (body if method != "HEAD" else b""))
        await writer.drain()
    except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass  # not HTTP, too slow, or gone: nothing to answer
    except Exception:
        log.exception("metrics: could not answer a scrape")
    finally:
        writer.close()
