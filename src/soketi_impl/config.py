"""soketi's configuration: its ``SOKETI_*`` environment variables and its JSON config file.

A soketi deployment must be able to switch to soketi-impl without touching its
configuration, so the names are soketi's (``src/cli/cli.ts`` and the docs at
docs.soketi.app), the defaults are soketi's, and so is the precedence: the config
file (flat dotted keys, ``{"port": 6001, "appManager.array.apps": [...]}``) is read
first and every ``SOKETI_*`` variable that is set overrides it.

Example::

    >>> cfg = load_config(environ={"SOKETI_PORT": "7001", "SOKETI_DEFAULT_APP_KEY": "k"})
    >>> cfg.port, cfg.app_by_key("k").id
    (7001, 'app-id')

Where we differ from soketi, on purpose:

- Mistakes are reported at start, naming the key (:class:`ConfigError`), instead of
  being silently ignored or crashing later.
- Environment values parse as JSON only for non-string settings, so an app id such
  as ``007`` or a secret such as ``1e5`` stays the string it was written as.
- A few settings soketi lacks get soketi-style names: ``SOKETI_HOST`` (``host``),
  ``SOKETI_ACTIVITY_TIMEOUT`` (``activityTimeout``), ``SOKETI_PONG_TIMEOUT`` (``pongTimeout``),
  ``SOKETI_WEBSOCKET_MAX_MESSAGE_SIZE_IN_KB`` (``websocket.maxMessageSizeInKb``) and
  ``SOKETI_CORS_ORIGIN`` (soketi's file key ``cors.origin``).
- soketi variables we accept but do not implement (SSL, NATS, SQL app managers,
  queues ...) are listed in :data:`NOT_IMPLEMENTED_ENV` and logged as warnings
  when set; unknown ``SOKETI_*`` variables are warned about too.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from soketi_impl.errors import ConfigError

__all__ = [
    "ENV_VARIABLES",
    "NOT_IMPLEMENTED_ENV",
    "WEBHOOK_EVENT_TYPES",
    "AppConfig",
    "Config",
    "WebhookConfig",
    "load_config",
]

logger = logging.getLogger("soketi_impl.config")

#: The webhook event types a webhook's ``event_types`` may list (Pusher's and soketi's).
WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
    }
)

# soketi's defaults for the default app of the array app manager.
DEFAULT_APP_ID = "app-id"
DEFAULT_APP_KEY = "app-key"
DEFAULT_APP_SECRET = "app-secret"


@dataclass(slots=True)
class WebhookConfig:
    """One webhook of an app, in soketi's form.

    ``{"url": ..., "event_types": [...], "headers": {...},
    "filter": {"channel_name_starts_with": ..., "channel_name_ends_with": ...}}``
    """

    url: str
    event_types: list[str]
    headers: dict[str, str] = field(default_factory=dict)
    filter_starts_with: str | None = None
    filter_ends_with: str | None = None

    def matches_channel(self, channel: str) -> bool:
        """Whether an event about ``channel`` passes this webhook's channel-name filter."""
        if self.filter_starts_with is not None and not channel.startswith(self.filter_starts_with):
            return False
        return self.filter_ends_with is None or channel.endswith(self.filter_ends_with)


@dataclass(slots=True)
class AppConfig:
    """One app (credentials, switches and limits), as soketi's array app manager holds it.

    ``-1`` means unlimited for ``max_connections`` and the per-second rates. The
    other limits default to soketi's server-wide values; :func:`load_config` fills an
    app's unset limits from the configured server-wide ones.
    """

    id: str
    key: str
    secret: str
    enabled: bool = True
    enable_client_messages: bool = False
    enable_user_authentication: bool = False
    max_connections: int = -1
    max_client_events_per_second: int = -1
    max_backend_events_per_second: int = -1
    max_read_requests_per_second: int = -1
    max_presence_members_per_channel: int = 100
    max_presence_member_size_in_kb: float = 2
    max_channel_name_length: int = 200
    max_event_channels_at_once: int = 100
    max_event_name_length: int = 200
    max_event_payload_in_kb: float = 100
    max_event_batch_size: int = 10
    webhooks: list[WebhookConfig] = field(default_factory=list)
    #: the app's master key for ``private-encrypted-`` channels (32 bytes, base64),
    #: as the official SDKs take it (``encryptionMasterKeyBase64``); None: not set
    encryption_master_key_base64: str | None = None


def _default_apps() -> list[AppConfig]:
    return [AppConfig(id=DEFAULT_APP_ID, key=DEFAULT_APP_KEY, secret=DEFAULT_APP_SECRET)]


@dataclass(slots=True)
class Config:
    """The whole server configuration. Build it with :func:`load_config`.

    Times are in the unit of the field's suffix (``_ms``) or in seconds; sizes in KB
    (1024 bytes). ``apps`` is indexed once, at construction: after changing it call
    :meth:`reindex`.
    """

    host: str = "0.0.0.0"
    port: int = 6001
    path_prefix: str = ""
    debug: bool = False
    apps: list[AppConfig] = field(default_factory=_default_apps)
    #: seconds an event stays in a cache channel (``SOKETI_CHANNEL_CACHE_TTL``)
    channel_cache_ttl: int = 3600
    #: seconds, what ``pusher:connection_established`` advertises
    activity_timeout: int = 30
    #: seconds a client may stay silent after the server's ``pusher:ping`` before it
    #: is closed with 4201 (``SOKETI_PONG_TIMEOUT``, ``pongTimeout``; pusher-js waits 30)
    pong_timeout: float = 30
    #: largest client WebSocket message accepted
    max_message_size_kb: float = 100
    #: largest HTTP API request body; soketi's ``SOKETI_HTTP_MAX_REQUEST_SIZE`` is in MB
    http_max_request_size_kb: float = 100 * 1024
    cors_origins: list[str] = field(default_factory=lambda: ["*"])
    metrics_enabled: bool = False
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9601
    metrics_prefix: str = "soketi_"
    adapter_driver: str = "local"
    #: prefix of the Redis adapter's Pub/Sub channels (``SOKETI_ADAPTER_REDIS_PREFIX``)
    adapter_redis_prefix: str = ""
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_username: str | None = None
    redis_password: str | None = None
    redis_key_prefix: str = ""
    shutdown_grace_period_ms: int = 3000
    user_authentication_timeout_ms: int = 30000
    webhooks_batching: bool = False
    webhooks_batching_duration_ms: int = 50
    #: bytes of webhook bodies waiting to be sent before new events are dropped
    #: (``SOKETI_WEBHOOKS_MAX_QUEUE_BYTES``, ``webhooks.maxQueueBytes``; ours)
    webhooks_max_queue_bytes: int = 64 * 1024 * 1024
    #: channels one connection may be subscribed to at once; a subscription beyond
    #: it is refused (``SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION``,
    #: ``channelLimits.maxPerConnection``; ours)
    max_channels_per_connection: int = 100
    # Server-wide limits: the defaults of every app that does not set its own.
    presence_max_members: int = 100
    presence_max_member_size_kb: float = 2
    channel_max_name_length: int = 200
    event_max_channels_at_once: int = 100
    event_max_name_length: int = 200
    event_max_payload_kb: float = 100
    event_max_batch_size: int = 10
    #: the warnings logged while loading (unknown or unimplemented settings)
    warnings: list[str] = field(default_factory=list, compare=False)
    _by_key: dict[str, AppConfig] = field(init=False, repr=False, compare=False)
    _by_id: dict[str, AppConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        """Rebuild the key and id lookups; raises :class:`ConfigError` on a duplicate."""
        by_key: dict[str, AppConfig] = {}
        by_id: dict[str, AppConfig] = {}
        for i, app in enumerate(self.apps):
            if app.key in by_key:
                raise ConfigError(f"appManager.array.apps.{i}.key", "a unique app key", app.key)
            if app.id in by_id:
                raise ConfigError(f"appManager.array.apps.{i}.id", "a unique app id", app.id)
            by_key[app.key] = app
            by_id[app.id] = app
        self._by_key = by_key
        self._by_id = by_id

    def app_by_key(self, key: str) -> AppConfig | None:
        """The app with this key (the one in ``/app/{key}``), or ``None``."""
        return self._by_key.get(key)

    def app_by_id(self, app_id: str) -> AppConfig | None:
        """The app with this id (the one in ``/apps/{id}/...``), or ``None``."""
        return self._by_id.get(app_id)

    @property
    def max_message_size_bytes(self) -> int:
        """``max_message_size_kb`` in bytes."""
        return int(self.max_message_size_kb * 1024)

    @property
    def http_max_request_size_bytes(self) -> int:
        """``http_max_request_size_kb`` in bytes."""
        return int(self.http_max_request_size_kb * 1024)


# ---------------------------------------------------------------------------
# Value checks. Each takes the value and the label to name in an error (a dotted
# file key or an environment variable) and returns the typed value.

_Coerce = Callable[[Any, str], Any]


@dataclass(frozen=True, slots=True)
class _Kind:
    coerce: _Coerce
    #: a string setting: environment values are taken verbatim, not parsed as JSON
    text: bool = False


def _bool(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ConfigError(label, "a boolean (true or false)", value)


def _number(value: Any, label: str) -> float:
    """An int or float; numeric strings too, as soketi's options are ``string|number``."""
    if isinstance(value, bool):
        raise ConfigError(label, "a number", value)
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ConfigError(label, "a number", value) from None
    else:
        raise ConfigError(label, "a number", value)
    if not math.isfinite(result):
        raise ConfigError(label, "a finite number", value)
    return result


def _int_at_least(minimum: int, what: str) -> _Coerce:
    def check(value: Any, label: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        else:
            try:
                number = _number(value, label)
            except ConfigError:
                raise ConfigError(label, what, value) from None
            if not number.is_integer():
                raise ConfigError(label, what, value)
            result = int(number)
        if result < minimum:
            raise ConfigError(label, what, value)
        return result

    return check


def _positive_number(value: Any, label: str) -> float:
    try:
        result = _number(value, label)
    except ConfigError:
        raise ConfigError(label, "a number above 0", value) from None
    if result <= 0:
        raise ConfigError(label, "a number above 0", value)
    return result


def _port(value: Any, label: str) -> int:
    # 0 lets the OS pick a free port (tests).
    result: int = _int_at_least(0, "a port number (0-65535)")(value, label)
    if result > 65535:
        raise ConfigError(label, "a port number (0-65535)", value)
    return result


def _str(value: Any, label: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(label, "a string", value)


def _nonempty_str(value: Any, label: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise ConfigError(label, "a non-empty string", value)


def _optional_str(value: Any, label: str) -> str | None:
    # soketi's null (and an empty variable) mean "not set".
    if value is None or value == "":
        return None
    return _str(value, label)


def _identifier(value: Any, label: str) -> str:
    """An app id, key or secret: a non-empty string; JSON numbers become strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise ConfigError(label, "a non-empty string", value)


def _path_prefix(value: Any, label: str) -> str:
    prefix = _str(value, label).strip()
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def _str_list(value: Any, label: str) -> list[str]:
    if isinstance(value, str):
        # An environment variable may hold "a,b" instead of a JSON list.
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError(label, "a list of strings", value)


def _choice(*allowed: str) -> _Coerce:
    what = "one of " + ", ".join(repr(a) for a in allowed)

    def check(value: Any, label: str) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        raise ConfigError(label, what, value)

    return check


def _master_key(value: Any, label: str) -> str | None:
    """32 bytes in base64 (an app's encryption master key); empty or null: not set."""
    text = _optional_str(value, label)
    if text is None:
        return None
    what = "32 bytes encoded in base64 (e.g. openssl rand -base64 32)"
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(label, what, "(not base64)") from None
    if len(raw) != 32:
        # the key itself is a secret: name its length, never echo it
        raise ConfigError(label, what, f"({len(raw)} bytes)")
    return text.strip()


def _mb_as_kb(value: Any, label: str) -> float:
    return _positive_number(value, label) * 1024


def _webhooks(value: Any, label: str) -> list[WebhookConfig]:
    if not isinstance(value, list):
        raise ConfigError(label, "a list of webhooks", value)
    return [_webhook(item, f"{label}.{i}") for i, item in enumerate(value)]


_WEBHOOK_FIELDS = frozenset({"url", "event_types", "headers", "filter"})
_FILTER_FIELDS = frozenset({"channel_name_starts_with", "channel_name_ends_with"})


def _webhook(value: Any, label: str) -> WebhookConfig:
    if not isinstance(value, dict):
        raise ConfigError(label, "a webhook object {url, event_types, headers?, filter?}", value)
    for name in value:
        if name not in _WEBHOOK_FIELDS:
            # soketi's lambda webhooks (lambda, lambda_function) land here too.
            raise ConfigError(f"{label}.{name}", "one of url, event_types, headers, filter")
    if "url" not in value:
        raise ConfigError(f"{label}.url", "a URL (required)")
    url = value["url"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{label}.url", "an http:// or https:// URL", url)
    event_types = value.get("event_types")
    if not isinstance(event_types, list) or not event_types:
        raise ConfigError(f"{label}.event_types", "a non-empty list of event types", event_types)
    for j, event_type in enumerate(event_types):
        if event_type not in WEBHOOK_EVENT_TYPES:
            raise ConfigError(
                f"{label}.event_types.{j}",
                "one of " + ", ".join(sorted(WEBHOOK_EVENT_TYPES)),
                event_type,
            )
    headers = value.get("headers", {})
    if headers is None:
        headers = {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f"{label}.headers", "an object of string header values", headers)
    starts: str | None = None
    ends: str | None = None
    flt = value.get("filter")
    if flt is not None:
        if not isinstance(flt, dict):
            raise ConfigError(f"{label}.filter", "an object", flt)
        for name in flt:
            if name not in _FILTER_FIELDS:
                raise ConfigError(
                    f"{label}.filter.{name}",
                    "one of channel_name_starts_with, channel_name_ends_with",
                )
        starts = _optional_str(
            flt.get("channel_name_starts_with"), f"{label}.filter.channel_name_starts_with"
        )
        ends = _optional_str(
            flt.get("channel_name_ends_with"), f"{label}.filter.channel_name_ends_with"
        )
    return WebhookConfig(
        url=url,
        event_types=list(event_types),
        headers=dict(headers),
        filter_starts_with=starts,
        filter_ends_with=ends,
    )


_BOOL = _Kind(_bool)
_TEXT = _Kind(_str, text=True)
_NONEMPTY = _Kind(_nonempty_str, text=True)
_OPTIONAL = _Kind(_optional_str, text=True)
_PORT = _Kind(_port)
_ID = _Kind(_identifier, text=True)
_POSITIVE = _Kind(_positive_number)


def _int_kind(minimum: int) -> _Kind:
    what = "an integer" if minimum <= -(2**31) else f"an integer >= {minimum}"
    return _Kind(_int_at_least(minimum, what))


# ---------------------------------------------------------------------------
# The settings: soketi's dotted file key -> (environment variable, Config field, kind).
# A field of None means "validated but nothing to store" (a driver we only have one of).


@dataclass(frozen=True, slots=True)
class _Setting:
    key: str
    env: str | None
    attr: str | None
    kind: _Kind


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("host", "SOKETI_HOST", "host", _NONEMPTY),
    _Setting("port", "SOKETI_PORT", "port", _PORT),
    _Setting("pathPrefix", "SOKETI_PATH_PREFIX", "path_prefix", _Kind(_path_prefix, text=True)),
    _Setting("debug", "SOKETI_DEBUG", "debug", _BOOL),
    _Setting("mode", "SOKETI_MODE", None, _Kind(_choice("full", "server"), text=True)),
    _Setting("activityTimeout", "SOKETI_ACTIVITY_TIMEOUT", "activity_timeout", _int_kind(1)),
    _Setting("pongTimeout", "SOKETI_PONG_TIMEOUT", "pong_timeout", _POSITIVE),
    _Setting(
        "websocket.maxMessageSizeInKb",
        "SOKETI_WEBSOCKET_MAX_MESSAGE_SIZE_IN_KB",
        "max_message_size_kb",
        _POSITIVE,
    ),
    _Setting(
        "httpApi.requestLimitInMb",
        "SOKETI_HTTP_MAX_REQUEST_SIZE",
        "http_max_request_size_kb",
        _Kind(_mb_as_kb),
    ),
    _Setting("cors.origin", "SOKETI_CORS_ORIGIN", "cors_origins", _Kind(_str_list)),
    _Setting(
        "channelLimits.maxNameLength",
        "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH",
        "channel_max_name_length",
        _int_kind(1),
    ),
    _Setting(
        "channelLimits.maxPerConnection",
        "SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION",
        "max_channels_per_connection",
        _int_kind(1),
    ),
    _Setting(
        "channelLimits.cacheTtl", "SOKETI_CHANNEL_CACHE_TTL", "channel_cache_ttl", _int_kind(0)
    ),
    _Setting(
        "eventLimits.maxChannelsAtOnce",
        "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE",
        "event_max_channels_at_once",
        _int_kind(1),
    ),
    _Setting(
        "eventLimits.maxNameLength",
        "SOKETI_EVENT_MAX_NAME_LENGTH",
        "event_max_name_length",
        _int_kind(1),
    ),
    _Setting(
        "eventLimits.maxPayloadInKb",
        "SOKETI_EVENT_MAX_SIZE_IN_KB",
        "event_max_payload_kb",
        _POSITIVE,
    ),
    _Setting(
        "eventLimits.maxBatchSize",
        "SOKETI_EVENT_MAX_BATCH_SIZE",
        "event_max_batch_size",
        _int_kind(1),
    ),
    _Setting(
        "presence.maxMembersPerChannel",
        "SOKETI_PRESENCE_MAX_MEMBERS",
        "presence_max_members",
        _int_kind(1),
    ),
    _Setting(
        "presence.maxMemberSizeInKb",
        "SOKETI_PRESENCE_MAX_MEMBER_SIZE",
        "presence_max_member_size_kb",
        _POSITIVE,
    ),
    _Setting("metrics.enabled", "SOKETI_METRICS_ENABLED", "metrics_enabled", _BOOL),
    _Setting(
        "metrics.driver", "SOKETI_METRICS_DRIVER", None, _Kind(_choice("prometheus"), text=True)
    ),
    _Setting("metrics.host", "SOKETI_METRICS_HOST", "metrics_host", _NONEMPTY),
    _Setting("metrics.port", "SOKETI_METRICS_SERVER_PORT", "metrics_port", _PORT),
    _Setting(
        "metrics.prometheus.prefix", "SOKETI_METRICS_PROMETHEUS_PREFIX", "metrics_prefix", _TEXT
    ),
    _Setting(
        "adapter.driver",
        "SOKETI_ADAPTER_DRIVER",
        "adapter_driver",
        _Kind(_choice("local", "redis"), text=True),
    ),
    _Setting("adapter.redis.prefix", "SOKETI_ADAPTER_REDIS_PREFIX", "adapter_redis_prefix", _TEXT),
    _Setting(
        "appManager.driver", "SOKETI_APP_MANAGER_DRIVER", None, _Kind(_choice("array"), text=True)
    ),
    _Setting("database.redis.host", "SOKETI_DB_REDIS_HOST", "redis_host", _NONEMPTY),
    _Setting("database.redis.port", "SOKETI_DB_REDIS_PORT", "redis_port", _PORT),
    _Setting("database.redis.db", "SOKETI_DB_REDIS_DB", "redis_db", _int_kind(0)),
    _Setting("database.redis.username", "SOKETI_DB_REDIS_USERNAME", "redis_username", _OPTIONAL),
    _Setting("database.redis.password", "SOKETI_DB_REDIS_PASSWORD", "redis_password", _OPTIONAL),
    _Setting("database.redis.keyPrefix", "SOKETI_DB_REDIS_KEY_PREFIX", "redis_key_prefix", _TEXT),
    _Setting(
        "shutdownGracePeriod",
        "SOKETI_SHUTDOWN_GRACE_PERIOD",
        "shutdown_grace_period_ms",
        _int_kind(0),
    ),
    _Setting(
        "userAuthenticationTimeout",
        "SOKETI_USER_AUTHENTICATION_TIMEOUT",
        "user_authentication_timeout_ms",
        _int_kind(1),
    ),
    _Setting("webhooks.batching.enabled", "SOKETI_WEBHOOKS_BATCHING", "webhooks_batching", _BOOL),
    _Setting(
        "webhooks.batching.duration",
        "SOKETI_WEBHOOKS_BATCHING_DURATION",
        "webhooks_batching_duration_ms",
        _int_kind(1),
    ),
    _Setting(
        "webhooks.maxQueueBytes",
        "SOKETI_WEBHOOKS_MAX_QUEUE_BYTES",
        "webhooks_max_queue_bytes",
        _int_kind(1024),
    ),
)

_SETTINGS_BY_KEY: dict[str, _Setting] = {s.key: s for s in _SETTINGS}

_APPS_KEY = "appManager.array.apps"
_APP_ITEM_KEY = re.compile(r"^appManager\.array\.apps\.(\d+)\.(.+)$")

_RATE = _int_kind(-1)


@dataclass(frozen=True, slots=True)
class _AppField:
    name: str  # soketi's camelCase name
    attr: str  # AppConfig attribute
    kind: _Kind
    #: the server-wide Config attribute an unset value is taken from
    server_default: str | None = None


_APP_FIELDS: tuple[_AppField, ...] = (
    _AppField("id", "id", _ID),
    _AppField("key", "key", _ID),
    _AppField("secret", "secret", _ID),
    _AppField("enabled", "enabled", _BOOL),
    _AppField("enableClientMessages", "enable_client_messages", _BOOL),
    _AppField("enableUserAuthentication", "enable_user_authentication", _BOOL),
    _AppField("maxConnections", "max_connections", _RATE),
    _AppField("maxClientEventsPerSecond", "max_client_events_per_second", _RATE),
    _AppField("maxBackendEventsPerSecond", "max_backend_events_per_second", _RATE),
    _AppField("maxReadRequestsPerSecond", "max_read_requests_per_second", _RATE),
    _AppField(
        "maxPresenceMembersPerChannel",
        "max_presence_members_per_channel",
        _int_kind(1),
        "presence_max_members",
    ),
    _AppField(
        "maxPresenceMemberSizeInKb",
        "max_presence_member_size_in_kb",
        _POSITIVE,
        "presence_max_member_size_kb",
    ),
    _AppField(
        "maxChannelNameLength", "max_channel_name_length", _int_kind(1), "channel_max_name_length"
    ),
    _AppField(
        "maxEventChannelsAtOnce",
        "max_event_channels_at_once",
        _int_kind(1),
        "event_max_channels_at_once",
    ),
    _AppField("maxEventNameLength", "max_event_name_length", _int_kind(1), "event_max_name_length"),
    _AppField("maxEventPayloadInKb", "max_event_payload_in_kb", _POSITIVE, "event_max_payload_kb"),
    _AppField("maxEventBatchSize", "max_event_batch_size", _int_kind(1), "event_max_batch_size"),
    _AppField("webhooks", "webhooks", _Kind(_webhooks)),
    _AppField(
        "encryptionMasterKeyBase64",
        "encryption_master_key_base64",
        _Kind(_master_key, text=True),
    ),
)

_APP_FIELDS_BY_NAME: dict[str, _AppField] = {f.name: f for f in _APP_FIELDS}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _app_aliases() -> dict[str, str]:
    """Other spellings soketi's App accepts (its SQL/DynamoDB rows use them)."""
    aliases: dict[str, str] = {}
    for f in _APP_FIELDS:
        aliases[f.name[0].upper() + f.name[1:]] = f.name
        snake = _snake(f.name)
        if snake != f.name:
            aliases[snake] = f.name
    aliases.update(
        {
            "AppId": "id",
            "AppKey": "key",
            "AppSecret": "secret",
            "max_backend_events_per_sec": "maxBackendEventsPerSecond",
            "max_client_events_per_sec": "maxClientEventsPerSecond",
            "max_read_req_per_sec": "maxReadRequestsPerSecond",
        }
    )
    return aliases


_APP_ALIASES: dict[str, str] = _app_aliases()

#: ``SOKETI_DEFAULT_APP_*`` -> the field of the first app it sets (soketi: ``appManager.array.apps.0.*``).
_DEFAULT_APP_ENV: dict[str, str] = {
    "SOKETI_DEFAULT_APP_ID": "id",
    "SOKETI_DEFAULT_APP_KEY": "key",
    "SOKETI_DEFAULT_APP_SECRET": "secret",
    "SOKETI_DEFAULT_APP_ENABLED": "enabled",
    "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "enableClientMessages",
    "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "enableUserAuthentication",
    "SOKETI_DEFAULT_APP_MAX_CONNS": "maxConnections",
    "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "maxClientEventsPerSecond",
    "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "maxBackendEventsPerSecond",
    "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC": "maxReadRequestsPerSecond",
    "SOKETI_DEFAULT_APP_WEBHOOKS": "webhooks",
    "SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64": "encryptionMasterKeyBase64",
}

#: Every environment variable we implement, with the file key it stands for.
ENV_VARIABLES: dict[str, str] = {
    **{s.env: s.key for s in _SETTINGS if s.env is not None},
    **{env: f"{_APPS_KEY}.0.{name}" for env, name in _DEFAULT_APP_ENV.items()},
}

#: soketi variables we accept but do not implement (value: soketi's file key). Setting
#: one logs a warning, unless it is set to the value that matches what we do anyway.
NOT_IMPLEMENTED_ENV: dict[str, str] = {
    "SOKETI_ADAPTER_CLUSTER_REQUESTS_TIMEOUT": "adapter.cluster.requestsTimeout",
    "SOKETI_ADAPTER_REDIS_CLUSTER_MODE": "adapter.redis.clusterMode",
    "SOKETI_ADAPTER_REDIS_REQUESTS_TIMEOUT": "adapter.redis.requestsTimeout",
    "SOKETI_ADAPTER_REDIS_SUB_OPTIONS": "adapter.redis.redisSubOptions",
    "SOKETI_ADAPTER_REDIS_PUB_OPTIONS": "adapter.redis.redisPubOptions",
    "SOKETI_ADAPTER_REDIS_SHARD_MODE": "adapter.redis.shardMode",
    "SOKETI_ADAPTER_NATS_PREFIX": "adapter.nats.prefix",
    "SOKETI_ADAPTER_NATS_SERVERS": "adapter.nats.servers",
    "SOKETI_ADAPTER_NATS_USER": "adapter.nats.user",
    "SOKETI_ADAPTER_NATS_PASSWORD": "adapter.nats.pass",
    "SOKETI_ADAPTER_NATS_TOKEN": "adapter.nats.token",
    "SOKETI_ADAPTER_NATS_CREDENTIALS": "adapter.nats.credentials",
    "SOKETI_ADAPTER_NATS_TIMEOUT": "adapter.nats.timeout",
    "SOKETI_ADAPTER_NATS_REQUESTS_TIMEOUT": "adapter.nats.requestsTimeout",
    "SOKETI_APP_MANAGER_CACHE_ENABLED": "appManager.cache.enabled",
    "SOKETI_APP_MANAGER_CACHE_TTL": "appManager.cache.ttl",
    "SOKETI_APP_MANAGER_DYNAMODB_TABLE": "appManager.dynamodb.table",
    "SOKETI_APP_MANAGER_DYNAMODB_REGION": "appManager.dynamodb.region",
    "SOKETI_APP_MANAGER_DYNAMODB_ENDPOINT": "appManager.dynamodb.endpoint",
    "SOKETI_APP_MANAGER_MYSQL_TABLE": "appManager.mysql.table",
    "SOKETI_APP_MANAGER_MYSQL_VERSION": "appManager.mysql.version",
    "SOKETI_APP_MANAGER_MYSQL_USE_V2": "appManager.mysql.useMysql2",
    "SOKETI_APP_MANAGER_POSTGRES_TABLE": "appManager.postgres.table",
    "SOKETI_APP_MANAGER_POSTGRES_VERSION": "appManager.postgres.version",
    "SOKETI_CACHE_DRIVER": "cache.driver",
    "SOKETI_CACHE_REDIS_CLUSTER_MODE": "cache.redis.clusterMode",
    "SOKETI_CACHE_REDIS_OPTIONS": "cache.redis.redisOptions",
    "SOKETI_CLUSTER_CHECK_INTERVAL": "cluster.checkInterval",
    "SOKETI_CLUSTER_HOST": "cluster.hostname",
    "SOKETI_CLUSTER_IGNORE_PROCESS": "cluster.ignoreProcess",
    "SOKETI_CLUSTER_BROADCAST_ADDRESS": "cluster.broadcast",
    "SOKETI_CLUSTER_KEEPALIVE_INTERVAL": "cluster.helloInterval",
    "SOKETI_CLUSTER_MASTER_TIMEOUT": "cluster.masterTimeout",
    "SOKETI_CLUSTER_MULTICAST_ADDRESS": "cluster.multicast",
    "SOKETI_CLUSTER_NODE_TIMEOUT": "cluster.nodeTimeout",
    "SOKETI_CLUSTER_PORT": "cluster.port",
    "SOKETI_CLUSTER_PREFIX": "cluster.prefix",
    "SOKETI_CLUSTER_UNICAST_ADDRESSES": "cluster.unicast",
    "SOKETI_DB_POOLING_ENABLED": "databasePooling.enabled",
    "SOKETI_DB_POOLING_MIN": "databasePooling.min",
    "SOKETI_DB_POOLING_MAX": "databasePooling.max",
    "SOKETI_DB_MYSQL_HOST": "database.mysql.host",
    "SOKETI_DB_MYSQL_PORT": "database.mysql.port",
    "SOKETI_DB_MYSQL_USERNAME": "database.mysql.user",
    "SOKETI_DB_MYSQL_PASSWORD": "database.mysql.password",
    "SOKETI_DB_MYSQL_DATABASE": "database.mysql.database",
    "SOKETI_DB_POSTGRES_HOST": "database.postgres.host",
    "SOKETI_DB_POSTGRES_PORT": "database.postgres.port",
    "SOKETI_DB_POSTGRES_USERNAME": "database.postgres.user",
    "SOKETI_DB_POSTGRES_PASSWORD": "database.postgres.password",
    "SOKETI_DB_POSTGRES_DATABASE": "database.postgres.database",
    "SOKETI_DB_REDIS_SENTINELS": "database.redis.sentinels",
    "SOKETI_DB_REDIS_SENTINEL_PASSWORD": "database.redis.sentinelPassword",
    "SOKETI_DB_REDIS_CLUSTER_NODES": "database.redis.clusterNodes",
    "SOKETI_DB_REDIS_INSTANCE_NAME": "database.redis.name",
    "SOKETI_HTTP_ACCEPT_TRAFFIC_MEMORY_THRESHOLD": "httpApi.acceptTraffic.memoryThreshold",
    "SOKETI_QUEUE_DRIVER": "queue.driver",
    "SOKETI_QUEUE_REDIS_CONCURRENCY": "queue.redis.concurrency",
    "SOKETI_QUEUE_REDIS_OPTIONS": "queue.redis.redisOptions",
    "SOKETI_QUEUE_REDIS_CLUSTER_MODE": "queue.redis.clusterMode",
    "SOKETI_QUEUE_SQS_REGION": "queue.sqs.region",
    "SOKETI_QUEUE_SQS_CLIENT_OPTIONS": "queue.sqs.clientOptions",
    "SOKETI_QUEUE_SQS_URL": "queue.sqs.queueUrl",
    "SOKETI_QUEUE_SQS_ENDPOINT": "queue.sqs.endpoint",
    "SOKETI_QUEUE_SQS_PROCESS_BATCH": "queue.sqs.processBatch",
    "SOKETI_QUEUE_SQS_BATCH_SIZE": "queue.sqs.batchSize",
    "SOKETI_QUEUE_SQS_POLLING_WAIT_TIME_MS": "queue.sqs.pollingWaitTimeMs",
    "SOKETI_RATE_LIMITER_DRIVER": "rateLimiter.driver",
    "SOKETI_RATE_LIMITER_REDIS_OPTIONS": "rateLimiter.redis.redisOptions",
    "SOKETI_RATE_LIMITER_REDIS_CLUSTER_MODE": "rateLimiter.redis.clusterMode",
    "SOKETI_SSL_CERT": "ssl.certPath",
    "SOKETI_SSL_KEY": "ssl.keyPath",
    "SOKETI_SSL_PASS": "ssl.passphrase",
    "SOKETI_SSL_CA": "ssl.caPath",
}

# Values of unimplemented settings that describe what we do anyway: no warning.
_HARMLESS: dict[str, object] = {
    "queue.driver": "sync",
    "rateLimiter.driver": "local",
    "cache.driver": "memory",
    "ssl.certPath": "",
    "ssl.keyPath": "",
    "ssl.passphrase": "",
    "ssl.caPath": "",
    "cors.credentials": True,
}

# soketi file keys we accept but do not implement, beyond NOT_IMPLEMENTED_ENV's.
_NOT_IMPLEMENTED_KEYS: frozenset[str] = frozenset(NOT_IMPLEMENTED_ENV.values()) | {
    "cors.credentials",
    "cors.methods",
    "cors.allowedHeaders",
}
# Whole soketi sections we do not implement: any key under them is accepted with a warning.
_NOT_IMPLEMENTED_SECTIONS: tuple[str, ...] = (
    "adapter.cluster.",
    "adapter.nats.",
    "appManager.cache.",
    "appManager.dynamodb.",
    "appManager.mysql.",
    "appManager.postgres.",
    "cache.",
    "cluster.",
    "database.mysql.",
    "database.postgres.",
    "databasePooling.",
    "httpApi.acceptTraffic.",
    "instance.",
    "queue.",
    "rateLimiter.",
    "ssl.",
)


def _not_implemented(key: str) -> bool:
    return key in _NOT_IMPLEMENTED_KEYS or key.startswith(_NOT_IMPLEMENTED_SECTIONS)


def _is_leaf(key: str) -> bool:
    """Whether ``key`` names one setting, so an object value is not flattened."""
    return key in _SETTINGS_BY_KEY or key == _APPS_KEY or _not_implemented(key)


# ---------------------------------------------------------------------------
# Loading


def _parse_env(raw: str, kind: _Kind) -> Any:
    """soketi parses every variable as JSON when it can; we do so for non-strings only."""
    if kind.text:
        if raw.startswith('"'):
            try:
                parsed = json.loads(raw)
            except ValueError:
                return raw
            if isinstance(parsed, str):
                return parsed
        return raw
    return _json_or_raw(raw)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _json_or_raw(raw: str) -> Any:
    try:
        parsed = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw
    # soketi keeps the raw string when the JSON is null.
    return raw if parsed is None else parsed


def _flatten(obj: Mapping[str, Any], prefix: str, out: list[tuple[str, Any]]) -> None:
    for name, value in obj.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{prefix}{name!r}", "a non-empty string key")
        key = prefix + name
        if isinstance(value, dict) and not _is_leaf(key) and not _APP_ITEM_KEY.match(key):
            _flatten(value, key + ".", out)
        else:
            out.append((key, value))


class _Loader:
    """Collects settings from the file, then the environment, then builds the Config."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        # None: the file did not set the app list, so soketi's default app is used.
        self.apps: list[dict[str, Any]] | None = None
        self.default_app: dict[str, Any] = {}
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning("%s", message)

    # -- the pieces -------------------------------------------------------

    def set_setting(self, setting: _Setting, value: Any, label: str) -> None:
        typed = setting.kind.coerce(value, label)
        if setting.attr is not None:
            self.values[setting.attr] = typed

    def app_slot(self, index: int, label: str) -> dict[str, Any]:
        apps = self.apps
        if apps is None:
            if index != 0:
                raise ConfigError(label, f"an app index within {_APPS_KEY} (0 to 0)", index)
            return self.default_app
        if index < len(apps):
            return apps[index]
        if index == len(apps):
            apps.append({})
            return apps[index]
        raise ConfigError(label, f"an app index within {_APPS_KEY} (0 to {len(apps)})", index)

    def set_app_field(self, slot: dict[str, Any], name: str, value: Any, label: str) -> None:
        canonical = name if name in _APP_FIELDS_BY_NAME else _APP_ALIASES.get(name)
        if canonical is None:
            raise ConfigError(label, "a known app field (" + ", ".join(_APP_FIELDS_BY_NAME) + ")")
        spec = _APP_FIELDS_BY_NAME[canonical]
        slot[canonical] = spec.kind.coerce(value, label)

    def set_apps(self, value: Any, label: str) -> None:
        if not isinstance(value, list):
            raise ConfigError(label, "a list of apps", value)
        apps: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            item_label = f"{label}.{i}"
            if not isinstance(item, dict):
                raise ConfigError(item_label, "an app object {id, key, secret, ...}", item)
            slot: dict[str, Any] = {}
            for name, field_value in item.items():
                field_label = f"{item_label}.{name}"
                canonical = name if name in _APP_FIELDS_BY_NAME else _APP_ALIASES.get(name)
                if canonical is not None and canonical in slot:
                    raise ConfigError(field_label, f"only one spelling of {canonical!r}")
                self.set_app_field(slot, name, field_value, field_label)
            for required in ("id", "key", "secret"):
                if required not in slot:
                    raise ConfigError(f"{item_label}.{required}", "a non-empty string (required)")
            apps.append(slot)
        self.apps = apps

    def set_unimplemented(self, key: str, value: Any, label: str) -> None:
        if key in _HARMLESS and _HARMLESS[key] == value:
            return
        self.warn(f"{label} is a soketi setting that soketi-impl does not implement; ignored")

    # -- the sources -------------------------------------------------------

    def load_file(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(path, f"a readable config file ({exc.strerror or exc})") from None
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ConfigError(path, f"a JSON config file ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(path, "a JSON object of dotted keys", type(data).__name__)
        pairs: list[tuple[str, Any]] = []
        _flatten(data, "", pairs)
        for key, value in pairs:
            self.set_file_key(key, value)

    def set_file_key(self, key: str, value: Any) -> None:
        setting = _SETTINGS_BY_KEY.get(key)
        if setting is not None:
            self.set_setting(setting, value, key)
            return
        if key == _APPS_KEY:
            self.set_apps(value, key)
            return
        match = _APP_ITEM_KEY.match(key)
        if match is not None:
            slot = self.app_slot(int(match.group(1)), key)
            self.set_app_field(slot, match.group(2), value, key)
            return
        if _not_implemented(key):
            self.set_unimplemented(key, value, key)
            return
        raise ConfigError(key, "a known soketi configuration key")

    def load_env(self, environ: Mapping[str, str]) -> None:
        unknown: list[str] = []
        for name in sorted(environ):
            if not name.startswith("SOKETI_") or name.startswith("SOKETI_IMPL_"):
                continue  # SOKETI_IMPL_* are our own build and debug knobs
            raw = environ[name]
            if raw == "":
                continue  # soketi treats an empty variable as unset
            setting = _SETTINGS_BY_KEY.get(ENV_VARIABLES.get(name, ""))
            if setting is not None:
                self.set_setting(setting, _parse_env(raw, setting.kind), name)
            elif name in _DEFAULT_APP_ENV:
                app_field = _APP_FIELDS_BY_NAME[_DEFAULT_APP_ENV[name]]
                slot = self.app_slot(0, name)
                self.set_app_field(slot, app_field.name, _parse_env(raw, app_field.kind), name)
            elif name in NOT_IMPLEMENTED_ENV:
                self.set_unimplemented(NOT_IMPLEMENTED_ENV[name], _json_or_raw(raw), name)
            else:
                unknown.append(name)
        if unknown:
            self.warn("unknown SOKETI_* environment variables, ignored: " + ", ".join(unknown))

    # -- the result -------------------------------------------------------

    def build(self) -> Config:
        cfg = Config(**self.values)
        if self.apps is None:
            slots = [
                {
                    "id": DEFAULT_APP_ID,
                    "key": DEFAULT_APP_KEY,
                    "secret": DEFAULT_APP_SECRET,
                    **self.default_app,
                }
            ]
        else:
            slots = self.apps
        apps: list[AppConfig] = []
        for i, slot in enumerate(slots):
            for required in ("id", "key", "secret"):
                if required not in slot:
                    raise ConfigError(
                        f"{_APPS_KEY}.{i}.{required}", "a non-empty string (required)"
                    )
            kwargs: dict[str, Any] = {}
            for spec in _APP_FIELDS:
                if spec.name in slot:
                    kwargs[spec.attr] = slot[spec.name]
                elif spec.server_default is not None:
                    kwargs[spec.attr] = getattr(cfg, spec.server_default)
            apps.append(AppConfig(**kwargs))
        if not apps:
            self.warn(f"{_APPS_KEY} is empty: no app can connect")
        cfg.apps = apps
        cfg.warnings = self.warnings
        cfg.reindex()
        return cfg


def load_config(config_file: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read soketi's JSON config file (if any), then override it with ``SOKETI_*`` variables.

    ``environ`` defaults to ``os.environ``. Raises :class:`~soketi_impl.errors.ConfigError`
    naming the key (or the file) for an unreadable or invalid file, an unknown file key,
    an unknown app or webhook field, a value of the wrong type, or a duplicate app key
    or id. Unknown and unimplemented ``SOKETI_*`` variables are only warned about (the
    warnings are logged and kept in :attr:`Config.warnings`).
    """
    loader = _Loader()
    if config_file is not None:
        loader.load_file(config_file)
    loader.load_env(os.environ if environ is None else environ)
    return loader.build()
