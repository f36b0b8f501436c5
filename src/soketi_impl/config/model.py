"""The configuration as the server reads it: :class:`Config`, :class:`AppConfig`,
:class:`WebhookConfig`. Build a :class:`Config` with :func:`soketi_impl.config.load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_APP_KEY",
    "DEFAULT_APP_SECRET",
    "WEBHOOK_EVENT_TYPES",
    "AppConfig",
    "Config",
    "WebhookConfig",
]

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
    #: subscribers of non-presence channels get ``pusher_internal:subscription_count``
    #: (the cluster's count) each time it changes (``enableSubscriptionCount``)
    enable_subscription_count: bool = False
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
    #: TLS (``SOKETI_SSL_CERT``, ``_KEY``, ``_PASS``, ``_CA``): on when a certificate
    #: or key path is set; WebSocket and HTTP API then share the port over TLS. A CA
    #: file asks clients for a certificate and checks the ones they send (soketi's
    #: uWebSockets does the same with its ``ca_file_name``); see :mod:`.tls`.
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_passphrase: str | None = None
    ssl_ca: str | None = None
    metrics_enabled: bool = False
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9601
    metrics_prefix: str = "soketi_"
    #: the debug dashboard on the metrics port at ``/dashboard`` (``SOKETI_DASHBOARD_ENABLED``;
    #: ours), seen only with ``dashboard_token`` (``SOKETI_DASHBOARD_TOKEN``, required then)
    dashboard_enabled: bool = False
    dashboard_token: str | None = field(default=None, repr=False)
    adapter_driver: str = "local"
    #: prefix of the Redis adapter's Pub/Sub channels (``SOKETI_ADAPTER_REDIS_PREFIX``)
    adapter_redis_prefix: str = ""
    #: the NATS adapter (``SOKETI_ADAPTER_NATS_*``, see :mod:`soketi_impl.adapters.nats`):
    #: servers, credentials, the subject and bucket prefix, timeouts in ms, and how
    #: many nodes answer a query (None: those alive, as their heartbeats say)
    adapter_nats_servers: list[str] = field(default_factory=lambda: ["127.0.0.1:4222"])
    adapter_nats_user: str | None = None
    adapter_nats_password: str | None = field(default=None, repr=False)
    adapter_nats_token: str | None = field(default=None, repr=False)
    adapter_nats_credentials: str | None = None
    adapter_nats_prefix: str = ""
    adapter_nats_timeout_ms: int = 10000
    adapter_nats_requests_timeout_ms: int = 5000
    adapter_nats_nodes_number: int | None = None
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_username: str | None = None
    redis_password: str | None = None
    redis_key_prefix: str = ""
    #: where apps come from (``SOKETI_APP_MANAGER_DRIVER``): ``array`` (``apps`` above),
    #: ``postgres`` or ``mysql`` (the ``apps`` table; see :mod:`soketi_impl.apps`)
    app_manager_driver: str = "array"
    #: keep apps read from a database for ``app_manager_cache_ttl`` seconds (<= 0: until
    #: the process ends); without the cache every lookup asks the database
    app_manager_cache_enabled: bool = False
    app_manager_cache_ttl: float = -1
    app_manager_postgres_table: str = "apps"
    app_manager_mysql_table: str = "apps"
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_username: str = "postgres"
    postgres_password: str = field(default="password", repr=False)
    postgres_database: str = "main"
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_username: str = "root"
    mysql_password: str = field(default="password", repr=False)
    mysql_database: str = "main"
    #: ``SOKETI_DB_POOLING_*``: a pool of min..max connections; off: one connection
    db_pooling_enabled: bool = False
    db_pooling_min: int = 0
    db_pooling_max: int = 7
    shutdown_grace_period_ms: int = 3000
    user_authentication_timeout_ms: int = 30000
    webhooks_batching: bool = False
    webhooks_batching_duration_ms: int = 50
    #: bytes of webhook bodies waiting to be sent before new events are dropped
    #: (``SOKETI_WEBHOOKS_MAX_QUEUE_BYTES``, ``webhooks.maxQueueBytes``; ours)
    webhooks_max_queue_bytes: int = 64 * 1024 * 1024
    #: how long a webhook request is retried (``SOKETI_WEBHOOKS_RETRY_FOR``, ms; ours) and
    #: the longest wait between two attempts (``SOKETI_WEBHOOKS_MAX_BACKOFF``, ms; ours)
    webhooks_retry_for_ms: int = 300_000
    webhooks_max_backoff_ms: int = 60_000
    #: ``full`` (serve and process the webhook queue), ``server`` (serve, enqueue only)
    #: or ``worker`` (process the queue only) (``SOKETI_MODE``)
    mode: str = "full"
    #: worker processes serving the one port as one server (``SOKETI_WORKERS``,
    #: ``workers``, ``soketi-impl start --workers N``; ours): 1 is one process, as
    #: soketi; 0 or ``auto`` one per CPU core (see :mod:`soketi_impl.workers`)
    workers: int = 1
    #: ``sync`` (webhooks wait in this process's memory) or ``redis`` (in Redis, durable;
    #: :mod:`soketi_impl.webhooks.queue`) (``SOKETI_QUEUE_DRIVER``)
    queue_driver: str = "sync"
    #: requests one worker sends at once (``SOKETI_QUEUE_REDIS_CONCURRENCY``)
    queue_redis_concurrency: int = 1
    #: the Redis queue's bound in requests (``SOKETI_QUEUE_REDIS_MAX_JOBS``; ours; its
    #: bound in bytes is ``webhooks_max_queue_bytes``)
    queue_redis_max_jobs: int = 100_000
    #: how long a worker's taken jobs stay its own without a heartbeat before another
    #: worker takes them back (``SOKETI_QUEUE_REDIS_LEASE``, ms; ours)
    queue_redis_lease_ms: int = 15_000
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
    def tls(self) -> bool:
        """Whether the server listens with TLS (wss:// and https://)."""
        return bool(self.ssl_cert or self.ssl_key)

    @property
    def max_message_size_bytes(self) -> int:
        """``max_message_size_kb`` in bytes."""
        return int(self.max_message_size_kb * 1024)

    @property
    def http_max_request_size_bytes(self) -> int:
        """``http_max_request_size_kb`` in bytes."""
        return int(self.http_max_request_size_kb * 1024)

