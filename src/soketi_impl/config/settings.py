"""The settings table: soketi's dotted file key, its ``SOKETI_*`` variable, the
:class:`~soketi_impl.config.Config` field it fills and the check its value passes;
the same for the fields of an app, with the spellings soketi accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .values import (
    BOOL,
    ID,
    NONEMPTY,
    NUMBER,
    OPTIONAL,
    PORT,
    POSITIVE,
    SQL_NAME,
    TEXT,
    Kind,
    as_path_prefix,
    choice,
    int_kind,
    master_key,
    mb_as_kb,
    optional_int,
    str_list,
    webhooks_list,
    workers_count,
)


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    env: str | None
    attr: str | None
    kind: Kind


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "SOKETI_HOST", "host", NONEMPTY),
    Setting("port", "SOKETI_PORT", "port", PORT),
    Setting("pathPrefix", "SOKETI_PATH_PREFIX", "path_prefix", Kind(as_path_prefix, text=True)),
    Setting("debug", "SOKETI_DEBUG", "debug", BOOL),
    Setting("mode", "SOKETI_MODE", "mode", Kind(choice("full", "server", "worker"), text=True)),
    # ours: worker processes on the one port (soketi_impl.workers)
    Setting("workers", "SOKETI_WORKERS", "workers", Kind(workers_count)),
    Setting("activityTimeout", "SOKETI_ACTIVITY_TIMEOUT", "activity_timeout", int_kind(1)),
    Setting("pongTimeout", "SOKETI_PONG_TIMEOUT", "pong_timeout", POSITIVE),
    Setting(
        "websocket.maxMessageSizeInKb",
        "SOKETI_WEBSOCKET_MAX_MESSAGE_SIZE_IN_KB",
        "max_message_size_kb",
        POSITIVE,
    ),
    Setting(
        "httpApi.requestLimitInMb",
        "SOKETI_HTTP_MAX_REQUEST_SIZE",
        "http_max_request_size_kb",
        Kind(mb_as_kb),
    ),
    Setting("cors.origin", "SOKETI_CORS_ORIGIN", "cors_origins", Kind(str_list)),
    Setting(
        "channelLimits.maxNameLength",
        "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH",
        "channel_max_name_length",
        int_kind(1),
    ),
    Setting(
        "channelLimits.maxPerConnection",
        "SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION",
        "max_channels_per_connection",
        int_kind(1),
    ),
    Setting(
        "channelLimits.cacheTtl", "SOKETI_CHANNEL_CACHE_TTL", "channel_cache_ttl", int_kind(0)
    ),
    Setting(
        "eventLimits.maxChannelsAtOnce",
        "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE",
        "event_max_channels_at_once",
        int_kind(1),
    ),
    Setting(
        "eventLimits.maxNameLength",
        "SOKETI_EVENT_MAX_NAME_LENGTH",
        "event_max_name_length",
        int_kind(1),
    ),
    Setting(
        "eventLimits.maxPayloadInKb",
        "SOKETI_EVENT_MAX_SIZE_IN_KB",
        "event_max_payload_kb",
        POSITIVE,
    ),
    Setting(
        "eventLimits.maxBatchSize",
        "SOKETI_EVENT_MAX_BATCH_SIZE",
        "event_max_batch_size",
        int_kind(1),
    ),
    Setting(
        "presence.maxMembersPerChannel",
        "SOKETI_PRESENCE_MAX_MEMBERS",
        "presence_max_members",
        int_kind(1),
    ),
    Setting(
        "presence.maxMemberSizeInKb",
        "SOKETI_PRESENCE_MAX_MEMBER_SIZE",
        "presence_max_member_size_kb",
        POSITIVE,
    ),
    Setting("ssl.certPath", "SOKETI_SSL_CERT", "ssl_cert", OPTIONAL),
    Setting("ssl.keyPath", "SOKETI_SSL_KEY", "ssl_key", OPTIONAL),
    Setting("ssl.passphrase", "SOKETI_SSL_PASS", "ssl_passphrase", OPTIONAL),
    Setting("ssl.caPath", "SOKETI_SSL_CA", "ssl_ca", OPTIONAL),
    Setting("metrics.enabled", "SOKETI_METRICS_ENABLED", "metrics_enabled", BOOL),
    Setting(
        "metrics.driver", "SOKETI_METRICS_DRIVER", None, Kind(choice("prometheus"), text=True)
    ),
    Setting("metrics.host", "SOKETI_METRICS_HOST", "metrics_host", NONEMPTY),
    Setting("metrics.port", "SOKETI_METRICS_SERVER_PORT", "metrics_port", PORT),
    Setting(
        "metrics.prometheus.prefix", "SOKETI_METRICS_PROMETHEUS_PREFIX", "metrics_prefix", TEXT
    ),
    Setting("dashboard.enabled", "SOKETI_DASHBOARD_ENABLED", "dashboard_enabled", BOOL),
    Setting("dashboard.token", "SOKETI_DASHBOARD_TOKEN", "dashboard_token", OPTIONAL),
    Setting(
        "adapter.driver",
        "SOKETI_ADAPTER_DRIVER",
        "adapter_driver",
        Kind(choice("local", "redis", "nats"), text=True),
    ),
    Setting("adapter.redis.prefix", "SOKETI_ADAPTER_REDIS_PREFIX", "adapter_redis_prefix", TEXT),
    Setting("adapter.nats.prefix", "SOKETI_ADAPTER_NATS_PREFIX", "adapter_nats_prefix", TEXT),
    Setting(
        "adapter.nats.servers", "SOKETI_ADAPTER_NATS_SERVERS", "adapter_nats_servers", Kind(str_list)
    ),
    Setting("adapter.nats.user", "SOKETI_ADAPTER_NATS_USER", "adapter_nats_user", OPTIONAL),
    Setting("adapter.nats.pass", "SOKETI_ADAPTER_NATS_PASSWORD", "adapter_nats_password", OPTIONAL),
    Setting("adapter.nats.token", "SOKETI_ADAPTER_NATS_TOKEN", "adapter_nats_token", OPTIONAL),
    Setting(
        "adapter.nats.credentials",
        "SOKETI_ADAPTER_NATS_CREDENTIALS",
        "adapter_nats_credentials",
        OPTIONAL,
    ),
    Setting(
        "adapter.nats.timeout", "SOKETI_ADAPTER_NATS_TIMEOUT", "adapter_nats_timeout_ms", int_kind(1)
    ),
    Setting(
        "adapter.nats.requestsTimeout",
        "SOKETI_ADAPTER_NATS_REQUESTS_TIMEOUT",
        "adapter_nats_requests_timeout_ms",
        int_kind(1),
    ),
    Setting(
        "adapter.nats.nodesNumber",
        "SOKETI_ADAPTER_NATS_NODES_NUMBER",
        "adapter_nats_nodes_number",
        Kind(optional_int(1)),
    ),
    Setting(
        "appManager.driver",
        "SOKETI_APP_MANAGER_DRIVER",
        "app_manager_driver",
        Kind(choice("array", "postgres", "mysql"), text=True),
    ),
    Setting(
        "appManager.cache.enabled",
        "SOKETI_APP_MANAGER_CACHE_ENABLED",
        "app_manager_cache_enabled",
        BOOL,
    ),
    Setting("appManager.cache.ttl", "SOKETI_APP_MANAGER_CACHE_TTL", "app_manager_cache_ttl", NUMBER),
    Setting(
        "appManager.postgres.table",
        "SOKETI_APP_MANAGER_POSTGRES_TABLE",
        "app_manager_postgres_table",
        SQL_NAME,
    ),
    Setting(
        "appManager.mysql.table", "SOKETI_APP_MANAGER_MYSQL_TABLE", "app_manager_mysql_table", SQL_NAME
    ),
    # knex's client versions in soketi: our drivers speak to any version, so accepted silently
    Setting("appManager.postgres.version", "SOKETI_APP_MANAGER_POSTGRES_VERSION", None, TEXT),
    Setting("appManager.mysql.version", "SOKETI_APP_MANAGER_MYSQL_VERSION", None, TEXT),
    Setting("appManager.mysql.useMysql2", "SOKETI_APP_MANAGER_MYSQL_USE_V2", None, BOOL),
    Setting("database.postgres.host", "SOKETI_DB_POSTGRES_HOST", "postgres_host", NONEMPTY),
    Setting("database.postgres.port", "SOKETI_DB_POSTGRES_PORT", "postgres_port", PORT),
    Setting("database.postgres.user", "SOKETI_DB_POSTGRES_USERNAME", "postgres_username", NONEMPTY),
    Setting("database.postgres.password", "SOKETI_DB_POSTGRES_PASSWORD", "postgres_password", TEXT),
    Setting("database.postgres.database", "SOKETI_DB_POSTGRES_DATABASE", "postgres_database", NONEMPTY),
    Setting("database.mysql.host", "SOKETI_DB_MYSQL_HOST", "mysql_host", NONEMPTY),
    Setting("database.mysql.port", "SOKETI_DB_MYSQL_PORT", "mysql_port", PORT),
    Setting("database.mysql.user", "SOKETI_DB_MYSQL_USERNAME", "mysql_username", NONEMPTY),
    Setting("database.mysql.password", "SOKETI_DB_MYSQL_PASSWORD", "mysql_password", TEXT),
    Setting("database.mysql.database", "SOKETI_DB_MYSQL_DATABASE", "mysql_database", NONEMPTY),
    Setting("databasePooling.enabled", "SOKETI_DB_POOLING_ENABLED", "db_pooling_enabled", BOOL),
    Setting("databasePooling.min", "SOKETI_DB_POOLING_MIN", "db_pooling_min", int_kind(0)),
    Setting("databasePooling.max", "SOKETI_DB_POOLING_MAX", "db_pooling_max", int_kind(1)),
    Setting("database.redis.host", "SOKETI_DB_REDIS_HOST", "redis_host", NONEMPTY),
    Setting("database.redis.port", "SOKETI_DB_REDIS_PORT", "redis_port", PORT),
    Setting("database.redis.db", "SOKETI_DB_REDIS_DB", "redis_db", int_kind(0)),
    Setting("database.redis.username", "SOKETI_DB_REDIS_USERNAME", "redis_username", OPTIONAL),
    Setting("database.redis.password", "SOKETI_DB_REDIS_PASSWORD", "redis_password", OPTIONAL),
    Setting("database.redis.keyPrefix", "SOKETI_DB_REDIS_KEY_PREFIX", "redis_key_prefix", TEXT),
    Setting(
        "shutdownGracePeriod",
        "SOKETI_SHUTDOWN_GRACE_PERIOD",
        "shutdown_grace_period_ms",
        int_kind(0),
    ),
    Setting(
        "userAuthenticationTimeout",
        "SOKETI_USER_AUTHENTICATION_TIMEOUT",
        "user_authentication_timeout_ms",
        int_kind(1),
    ),
    Setting("webhooks.batching.enabled", "SOKETI_WEBHOOKS_BATCHING", "webhooks_batching", BOOL),
    Setting(
        "webhooks.batching.duration",
        "SOKETI_WEBHOOKS_BATCHING_DURATION",
        "webhooks_batching_duration_ms",
        int_kind(1),
    ),
    Setting(
        "webhooks.maxQueueBytes",
        "SOKETI_WEBHOOKS_MAX_QUEUE_BYTES",
        "webhooks_max_queue_bytes",
        int_kind(1024),
    ),
    # the durable queue (soketi's names) and the retry schedule (ours), see README.md
    Setting("queue.driver", "SOKETI_QUEUE_DRIVER", "queue_driver", Kind(choice("sync", "redis"), text=True)),
    Setting(
        "queue.redis.concurrency",
        "SOKETI_QUEUE_REDIS_CONCURRENCY",
        "queue_redis_concurrency",
        int_kind(1),
    ),
    Setting("queue.redis.maxJobs", "SOKETI_QUEUE_REDIS_MAX_JOBS", "queue_redis_max_jobs", int_kind(1)),
    Setting("queue.redis.lease", "SOKETI_QUEUE_REDIS_LEASE", "queue_redis_lease_ms", int_kind(1000)),
    Setting("webhooks.retryFor", "SOKETI_WEBHOOKS_RETRY_FOR", "webhooks_retry_for_ms", int_kind(0)),
    Setting("webhooks.maxBackoff", "SOKETI_WEBHOOKS_MAX_BACKOFF", "webhooks_max_backoff_ms", int_kind(10)),
)

SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}

APPS_KEY = "appManager.array.apps"
APP_ITEM_KEY = re.compile(r"^appManager\.array\.apps\.(\d+)\.(.+)$")

RATE = int_kind(-1)


@dataclass(frozen=True, slots=True)
class AppField:
    name: str  # soketi's camelCase name
    attr: str  # AppConfig attribute
    kind: Kind
    #: the server-wide Config attribute an unset value is taken from
    server_default: str | None = None


APP_FIELDS: tuple[AppField, ...] = (
    AppField("id", "id", ID),
    AppField("key", "key", ID),
    AppField("secret", "secret", ID),
    AppField("enabled", "enabled", BOOL),
    AppField("enableClientMessages", "enable_client_messages", BOOL),
    AppField("enableUserAuthentication", "enable_user_authentication", BOOL),
    AppField("enableSubscriptionCount", "enable_subscription_count", BOOL),
    AppField("maxConnections", "max_connections", RATE),
    AppField("maxClientEventsPerSecond", "max_client_events_per_second", RATE),
    AppField("maxBackendEventsPerSecond", "max_backend_events_per_second", RATE),
    AppField("maxReadRequestsPerSecond", "max_read_requests_per_second", RATE),
    AppField(
        "maxPresenceMembersPerChannel",
        "max_presence_members_per_channel",
        int_kind(1),
        "presence_max_members",
    ),
    AppField(
        "maxPresenceMemberSizeInKb",
        "max_presence_member_size_in_kb",
        POSITIVE,
        "presence_max_member_size_kb",
    ),
    AppField(
        "maxChannelNameLength", "max_channel_name_length", int_kind(1), "channel_max_name_length"
    ),
    AppField(
        "maxEventChannelsAtOnce",
        "max_event_channels_at_once",
        int_kind(1),
        "event_max_channels_at_once",
    ),
    AppField("maxEventNameLength", "max_event_name_length", int_kind(1), "event_max_name_length"),
    AppField("maxEventPayloadInKb", "max_event_payload_in_kb", POSITIVE, "event_max_payload_kb"),
    AppField("maxEventBatchSize", "max_event_batch_size", int_kind(1), "event_max_batch_size"),
    AppField("webhooks", "webhooks", Kind(webhooks_list)),
    AppField(
        "encryptionMasterKeyBase64",
        "encryption_master_key_base64",
        Kind(master_key, text=True),
    ),
)

APP_FIELDS_BY_NAME: dict[str, AppField] = {f.name: f for f in APP_FIELDS}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _app_aliases() -> dict[str, str]:
    """Other spellings soketi's App accepts (its SQL/DynamoDB rows use them)."""
    aliases: dict[str, str] = {}
    for f in APP_FIELDS:
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


APP_ALIASES: dict[str, str] = _app_aliases()

#: ``SOKETI_DEFAULT_APP_*`` -> the field of the first app it sets (soketi: ``appManager.array.apps.0.*``).
DEFAULT_APP_ENV: dict[str, str] = {
    "SOKETI_DEFAULT_APP_ID": "id",
    "SOKETI_DEFAULT_APP_KEY": "key",
    "SOKETI_DEFAULT_APP_SECRET": "secret",
    "SOKETI_DEFAULT_APP_ENABLED": "enabled",
    "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "enableClientMessages",
    "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "enableUserAuthentication",
    "SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT": "enableSubscriptionCount",
    "SOKETI_DEFAULT_APP_MAX_CONNS": "maxConnections",
    "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "maxClientEventsPerSecond",
    "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "maxBackendEventsPerSecond",
    "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC": "maxReadRequestsPerSecond",
    "SOKETI_DEFAULT_APP_WEBHOOKS": "webhooks",
    "SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64": "encryptionMasterKeyBase64",
}

#: Every environment variable we implement, with the file key it stands for.
ENV_VARIABLES: dict[str, str] = {
    **{s.env: s.key for s in SETTINGS if s.env is not None},
    **{env: f"{APPS_KEY}.0.{name}" for env, name in DEFAULT_APP_ENV.items()},
}

#: soketi variables we accept but do not implement (value: soketi's file key). Setting
