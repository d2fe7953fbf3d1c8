"""Settings: one flat table of (name, default, help), like Datasette's.

Load order: defaults < TOML file (``--config``) < ``FLOWBOX_*`` environment variables.
Remote models are named sections: ``[remote.NAME]`` with base_url, api_key, model, and
``FLOWBOX_REMOTE_BASE_URL`` / ``_API_KEY`` / ``_MODEL`` configure one named "remote".
"""

from __future__ import annotations

import os
import tomllib
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
    Setting("chat_model", "smollm2", "Default local chat model: 'smollm2' or a path to a GGUF file."),
    Setting("embedding_model", "all-minilm-l6-v2", "Local embedding model: 'all-minilm-l6-v2' or a path to a GGUF file."),
    Setting("n_ctx", 4096, "Context window of the local chat model, in tokens."),
    Setting("n_threads", 0, "CPU threads for the local models (0 = all cores)."),
    Setting("prompt_cache_mb", 1024, "Memory kept for evaluated thread prefixes (model state reuse), in MB."),
    Setting("default_max_tokens", 256, "Reply length limit for agents that set none, in tokens."),
    Setting("max_body_bytes", 1_048_576, "Largest accepted JSON request body, in bytes."),
    Setting("max_message_chars", 32_000, "Largest accepted chat message, in characters."),
    Setting("max_queue", 64, "Model requests allowed to wait at once before answering 503."),
    Setting("allow_private_outbound", False, "Allow callbacks and webhooks to loopback and private (LAN) addresses."),
)

_BY_NAME = {s.name: s for s in SETTINGS}
REMOTE_FIELDS = ("base_url", "api_key", "model")
ENV_PREFIX = "FLOWBOX_"


@dataclass(frozen=True)
class RemoteModel:
    name: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)  # never printed


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
        if number < 0 or (key == "port" and number > 65535):
            raise ConfigError(f"setting '{key}' is out of range: {number}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"setting '{key}' must be a string, got {value!r}")
    if key == "log_level" and value.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"setting 'log_level' must be one of debug, info, warning, error, got {value!r}")
    return value


def _remote(name: str, raw: Any) -> RemoteModel:
    if not isinstance(raw, dict):
        raise ConfigError(f"setting 'remote.{name}' must be a table with base_url, api_key, model")
    for key in raw:
        if key not in REMOTE_FIELDS:
            raise ConfigError(f"unknown setting 'remote.{name}.{key}'")
    for key in ("base_url", "model"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"setting 'remote.{name}.{key}' is required and must be a string")
    if not raw["base_url"].startswith(("http://", "https://")):
        raise ConfigError(f"setting 'remote.{name}.base_url' must start with http:// or https://")
    return RemoteModel(name, raw["base_url"].rstrip("/"), raw["model"], str(raw.get("api_key") or ""))


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
