"""Settings: one flat table of (name, default, help), like Datasette's.

Load order: defaults < TOML file (``--config``) < ``FLOWBOX_*`` environment variables.
Remote models are named sections: ``[remote.NAME]`` with base_url (or base_urls, a pool of
servers), api_key, model, and ``FLOWBOX_REMOTE_BASE_URL`` / ``_BASE_URLS`` (comma-separated) /
``_API_KEY`` / ``_MODEL`` configure one named "remote".
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs


class ConfigError(Exception):
    """A setting is wrong; the message names the key."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address to listen on."),
    Setting("port", 8000, "TCP port to listen on."),
    Setting("data_dir", "", "Where the database, models and uploads live (default: the platform's user data dir)."),
    Setting("models_dir", "", "Where prepared model files are cached (default: <data_dir>/models)."),
    Setting("public_url", "", "Base URL clients reach flowbox on, e.g. https://bot.example.lan (default: taken from each request)."),
    Setting("log_level", "info", "One of debug, info, warning, error."),
    Setting("log_format", "text",
            "'text' (one readable line per event) or 'json' (one JSON object per line: time, level, message; request lines add request_id, "
            "route, status, duration_ms, org_id). Never keys, tokens or bodies in either."),
    Setting("metrics_port", 0, "Serve Prometheus metrics at http://127.0.0.1:<port>/metrics, on loopback only and without a key (0 = off)."),
    Setting("metrics_key", "",
            "Serve Prometheus metrics at /metrics on the main port to 'Authorization: Bearer <metrics_key>' (at least 16 characters; "
            "empty = not served there)."),
    Setting("chat_model", "smollm2", "Default local chat model: 'smollm2' or a path to a GGUF file."),
    Setting("embedding_model", "all-minilm-l6-v2",
            "Local embedding model (intents, /v1/embeddings): 'all-minilm-l6-v2' or a path to a GGUF file."),
    Setting("knowledge_embedding_model", "",
            "Local embedding model of the knowledge base: empty = with the built-in MiniLM, MiniLM as changed for search "
            "('all-minilm-l6-v2-search'), else embedding_model; or 'e5-small' (multilingual-e5-small: English and Portuguese), "
            "'all-minilm-l6-v2' (as it is) or a path to a GGUF file. After a change the server re-embeds the knowledge base at start."),
    Setting("n_ctx", 4096, "Context window of the local chat model, in tokens."),
    Setting("n_threads", 0, "CPU threads for the local models (0 = all cores)."),
    Setting("prompt_cache_mb", 1024, "Memory kept for evaluated thread prefixes (model state reuse), in MB."),
    Setting("n_gpu_layers", -1,
            "Model layers offloaded to the GPU: -1 = all when llama-cpp-python was built with a GPU backend (CUDA, Metal, Vulkan), "
            "else none; a model added with --gpu-layers uses its own."),
    Setting("models_max_loaded", 2,
            "Local models kept loaded at once (each in its own worker process); loading another unloads the least recently used idle one."),
    Setting("models_memory_mb", 0,
            "Memory budget of the loaded local models, in MB, their file sizes taken as the estimate (0 = no limit beyond models_max_loaded)."),
    Setting("tool_format", "auto",
            "How local models call tools: 'native' (the chat template's own format: Hermes/Qwen 2.5, Llama 3.x, Mistral), 'router' (a short "
            "grammar-constrained prompt picks the tool; for small models without one), or 'auto' (native when the template has one)."),
    Setting("default_max_tokens", 256, "Reply length limit for agents that set none, in tokens."),
    Setting("max_body_bytes", 1_048_576, "Largest accepted JSON request body, in bytes."),
    Setting("max_message_chars", 32_000, "Largest accepted chat message, in characters."),
    Setting("max_queue", 64, "Model requests allowed to wait at once before answering 503; when full, orgs share the room fairly."),
    Setting("parallel_sequences", 4,
            "Chats a local model generates at once, decoded together in one batch; each has its own n_ctx of KV cache memory."),
    Setting("max_generations_per_org", 0,
            "Generations one org may run at once on a local model; its further requests wait while other orgs' run "
            "(0 = no cap beyond the fair queue)."),
    Setting("max_messages", 1000,
            "Most messages one chat request may send (400 above it); a longer thread or chat is prompted with its most recent ones (0 = no limit)."),
    Setting("allow_private_outbound", False, "Allow callbacks and webhooks to loopback and private (LAN) addresses."),
    Setting("rate_limit_per_minute", 600, "Requests per minute allowed per API key (or per client address without one); 0 = no limit."),
    Setting("rate_limit_burst", 60, "Requests a key may make at once above its steady rate before 429."),
    Setting("request_header_timeout_ms", 10_000,
            "Time a client has to send a request's headers (from connecting, or from the first byte of a next request); past it 408 and the "
            "connection closes. 0 = no limit."),
    Setting("request_body_timeout_ms", 20_000,
            "Time a client has to send a request's body, plus one second per request_body_min_rate bytes received; past it 408 and the connection "
            "closes. 0 = no limit."),
    Setting("request_body_min_rate", 1000,
            "Bytes a second a slow request body earns more time for (see request_body_timeout_ms); 0 = the time limit is fixed."),
    Setting("trusted_proxies", "",
            "Comma-separated addresses of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (* = any); empty = none: a "
            "client's address is the one it connects from."),
    Setting("cors_origins", "",
            "Comma-separated origins allowed to call flowbox from a browser (e.g. https://shop.example); empty = none, * = any. The bearer-token "
            "messaging APIs (REST v1, socket.info, the web SDK's calls) answer any origin when empty, these when set."),
    Setting("tls_cert", "", "PEM certificate file: serve HTTPS and wss:// (with tls_key)."),
    Setting("tls_key", "", "PEM private key file for tls_cert."),
    Setting("replicate_to", "",
            "Replicate the database continuously with Litestream to file:///path or s3://bucket/path (empty = off); S3 credentials come "
            "from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), never from settings."),
    Setting("replicate_s3_endpoint", "", "Replication: endpoint of an S3-compatible store (MinIO, R2, B2...), e.g. https://s3.lan; empty = AWS."),
    Setting("replicate_s3_region", "", "Replication: the S3 region (empty = the store's default)."),
    Setting("backup_every", "0", "Take a backup (as flowbox backup does) this often while serving, e.g. 6h, 30m, 1d; 0 = off."),
    Setting("backup_keep", 7, "Scheduled backups kept: the newest N; older ones are deleted (0 = keep all)."),
    Setting("backup_dir", "", "Where scheduled backups are written (default: <data_dir>/backups)."),
    Setting("tokens_per_credit", 1000, "Credit rule: one credit per started N tokens (prompt + completion) of an agent call; 0 = flat per call."),
    Setting("min_credits_per_call", 1, "Credit rule: the least an agent call costs, in credits."),
    Setting("outbox_retry_base_ms", 2000, "Outbox (callbacks, webhooks): delay before the first retry; doubles each retry, with jitter."),
    Setting("outbox_retry_max_ms", 600_000, "Outbox: the longest delay between two retries."),
    Setting("outbox_max_age_seconds", 14_400, "Outbox: how long a delivery is retried before it becomes a dead letter."),
    Setting("outbox_timeout_ms", 10_000, "Outbox: time limit of one delivery attempt (connect, send, answer)."),
    Setting("outbox_concurrency", 16, "Outbox: deliveries attempted at once."),
    Setting("outbox_poll_ms", 2000, "Outbox: how often the worker looks for deliveries queued by other processes (the CLI)."),
    Setting("outbox_keep_days", 7, "Outbox: days delivered rows are kept for inspection (0 = forever); dead letters stay until retried."),
    Setting("whatsapp_api_base_url", "https://graph.facebook.com", "WhatsApp Cloud API base URL for connections that set none."),
    Setting("whatsapp_api_version", "v21.0", "WhatsApp Cloud API version for connections that set none."),
    Setting("whatsapp_timeout_ms", 15_000, "Time limit of one WhatsApp Cloud API call."),
    Setting("oauth_token_ttl", 3600, "Lifetime of OAuth2 access tokens issued by POST /oauth/token, in seconds."),
    Setting("embedding_base_url", "", "Remote OpenAI-compatible embeddings: base URL (POST <url>/embeddings); empty = the local embedding model."),
    Setting("embedding_api_key", "", "Remote embeddings: API key (sent as a Bearer token)."),
    Setting("embedding_remote_model", "", "Remote embeddings: the model name to ask for."),
    Setting("knowledge_max_items", 0, "Knowledge items one org may hold (0 = unlimited); beyond it adding answers the documented 402."),
    Setting("knowledge_second_reading", True,
            "Knowledge search reads a question beside its leading result where the search alone is unsure whether it answers "
            "(the answer encoder, with the default models only): 1 to 6 points more answerable questions above the 'no answer' "
            "line, for about 50 ms more CPU on such a search (README \"Knowledge\"). false = the search alone decides."),
    Setting("knowledge_context_items", 2, "Knowledge entries retrieved into a linked agent's context each turn (0 = only through the search tool)."),
    Setting("messaging_intent_threshold", 50,
            "Messaging: least confidence, in percent, for an intent to match (README \"Intent matching\"; a project may set its own)."),
    Setting("messaging_max_upload_mb", 250, "Messaging: largest media upload on POST /rest/v1/messages, in MB (the documented limit is 250)."),
    Setting("messaging_sdk_max_upload_mb", 25, "Messaging: largest file an anonymous web-SDK client uploads on POST /thread.upload, in MB."),
    Setting("messaging_media_quota_mb", 1024,
            "Messaging: media bytes one project may hold, in MB; an upload past it is refused (413). 0 = no limit."),
    Setting("messaging_media_keep_days", 30, "Messaging: days an uploaded media file is kept and served; older ones are deleted (0 = forever)."),
    Setting("messaging_socket_token_ttl_ms", 60_000,
            "Messaging sockets: how long a socket URL from GET /socket.info stays valid (single use), in ms (documented: 60 seconds)."),
    Setting("messaging_socket_idle_ms", 50_000,
            "Messaging sockets: close a socket after this long without a frame from the client, in ms (documented: 50 seconds)."),
    Setting("messaging_socket_max_frame_bytes", 65_536,
            "Messaging sockets: largest frame accepted; a larger one is answered with an error frame and dropped."),
    Setting("messaging_socket_frames_per_second", 20, "Messaging sockets: frames a socket may send per second, on average (0 = no limit)."),
    Setting("messaging_socket_frame_burst", 40,
            "Messaging sockets: frames a socket may send at once above its steady rate; once this many in a row were dropped it is closed (4429)."),
    Setting("messaging_socket_max_per_address", 100, "Messaging sockets: open sockets allowed per client address (0 = no limit)."),
)

_BY_NAME = {s.name: s for s in SETTINGS}
REMOTE_FIELDS = ("base_url", "base_urls", "api_key", "model")
ENV_PREFIX = "FLOWBOX_"


@dataclass(frozen=True)
class RemoteModel:
    name: str
    base_url: str  # the first of base_urls
    model: str
    api_key: str = field(default="", repr=False)  # never printed
    base_urls: tuple[str, ...] = ()  # every server of the pool (models/pool.py), base_url first

    def __post_init__(self) -> None:
        if not self.base_urls:
            object.__setattr__(self, "base_urls", (self.base_url,))


@dataclass(frozen=True)
class Config:
    values: dict[str, Any]
    remotes: dict[str, RemoteModel]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def data_path(self) -> Path:
        return Path(self.values["data_dir"] or platformdirs.user_data_dir("flowbox")).expanduser()

    @property
    def models_path(self) -> Path:
        return Path(self.values["models_dir"]).expanduser() if self.values["models_dir"] else self.data_path / "models"

    @property
    def db_path(self) -> Path:
        return self.data_path / "flowbox.db"

    @property
    def backup_path(self) -> Path:
        return Path(self.values["backup_dir"]).expanduser() if self.values["backup_dir"] else self.data_path / "backups"

    @property
    def threads(self) -> int:
        return self.values["n_threads"] or os.cpu_count() or 1

    def replace(self, **overrides: Any) -> "Config":
        values = dict(self.values)
        for key, value in overrides.items():
            if value is not None:
                values[key] = _coerce(key, value)
        return Config(values, self.remotes)


def _coerce(key: str, value: Any) -> Any:
    setting = _BY_NAME.get(key)
    if setting is None:
        raise ConfigError(f"unknown setting '{key}'")
    want = type(setting.default)
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"setting '{key}' must be true or false, got {value!r}")
    if want is int:
        if isinstance(value, bool):
            raise ConfigError(f"setting '{key}' must be an integer, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"setting '{key}' must be an integer, got {value!r}") from None
        if (number < 0 and not (key == "n_gpu_layers" and number == -1)) or (key in ("port", "metrics_port") and number > 65535) \
                or (key in ("models_max_loaded", "parallel_sequences") and number < 1):
            raise ConfigError(f"setting '{key}' is out of range: {number}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"setting '{key}' must be a string, got {value!r}")
    if key == "log_level" and value.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"setting 'log_level' must be one of debug, info, warning, error, got {value!r}")
    if key == "log_format" and value not in ("text", "json"):
        raise ConfigError(f"setting 'log_format' must be text or json, got {value!r}")
    if key == "metrics_key" and 0 < len(value) < 16:
        raise ConfigError("setting 'metrics_key' must be at least 16 characters (it guards the metrics on the main port)")
    if key == "backup_every":
        duration_seconds(value, key)
    if key == "replicate_to":
        _check_replica_url(value)
    if key == "tool_format" and value not in ("auto", "native", "router"):
        raise ConfigError(f"setting 'tool_format' must be one of auto, native, router, got {value!r}")
    return value


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str, key: str = "duration") -> float:
    """'6h', '30m', '90s', '1d', '500ms' or a number of seconds, as seconds; '0' is 0 (off)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
    if not match:
        raise ConfigError(f"setting '{key}' must be a duration such as 6h, 30m, 90s or 0, got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _check_replica_url(url: str) -> None:
    if not url:
        return
    parsed = urllib.parse.urlsplit(url)
    if parsed.username or parsed.password:  # would end up in logs and process lists
        raise ConfigError("setting 'replicate_to' must not hold credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead")
    if not (parsed.scheme == "file" and not parsed.netloc and parsed.path.strip("/")) and not (parsed.scheme == "s3" and parsed.netloc):
        raise ConfigError(f"setting 'replicate_to' must be file:///path or s3://bucket/path, got {url!r}")


def _remote(name: str, raw: Any) -> RemoteModel:
    if not isinstance(raw, dict):
        raise ConfigError(f"setting 'remote.{name}' must be a table with base_url (or base_urls), api_key, model")
    for key in raw:
        if key not in REMOTE_FIELDS:
            raise ConfigError(f"unknown setting 'remote.{name}.{key}'")
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        raise ConfigError(f"setting 'remote.{name}.model' is required and must be a string")
    urls = _remote_urls(name, raw)
    return RemoteModel(name, urls[0], raw["model"], str(raw.get("api_key") or ""), urls)


def _remote_urls(name: str, raw: dict[str, Any]) -> tuple[str, ...]:
    """base_url and base_urls together (a list in TOML, comma-separated in the environment), in order,
    each once; at least one is required."""
    one, many = raw.get("base_url"), raw.get("base_urls", [])
    if isinstance(many, str):
        many = [url.strip() for url in many.split(",") if url.strip()]
    if one is not None and (not isinstance(one, str) or not one):
        raise ConfigError(f"setting 'remote.{name}.base_url' must be a non-empty string")
    if not isinstance(many, list) or not all(isinstance(url, str) and url for url in many):
        raise ConfigError(f"setting 'remote.{name}.base_urls' must be a list of URLs")
    urls: list[str] = []
    for key, url in ([("base_url", one)] if one is not None else []) + [("base_urls", url) for url in many]:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"setting 'remote.{name}.{key}' must start with http:// or https://")
        if url.rstrip("/") not in urls:
            urls.append(url.rstrip("/"))
    if not urls:
        raise ConfigError(f"setting 'remote.{name}.base_url' (or base_urls) is required and must be a string")
    return tuple(urls)


def load(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    values = {s.name: s.default for s in SETTINGS}
    remotes_raw: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fp:
                data = tomllib.load(fp)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key == "remote":
                if not isinstance(value, dict):
                    raise ConfigError("setting 'remote' must be a table of named remote models")
                remotes_raw.update(value)
            else:
                values[key] = _coerce(key, value)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key.startswith("remote_"):
            field_name = key[len("remote_"):]
            if field_name in REMOTE_FIELDS:
                remotes_raw.setdefault("remote", {})[field_name] = value
            continue
        if key in _BY_NAME:
            values[key] = _coerce(key, value)
    remotes = {name: _remote(name, raw) for name, raw in remotes_raw.items()}
    return Config(values, remotes)
