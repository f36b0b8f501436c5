"""soketi's configuration: defaults, file, environment, precedence and validation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soketi_impl.config import (
    ENV_VARIABLES,
    NOT_IMPLEMENTED_ENV,
    WEBHOOK_EVENT_TYPES,
    AppConfig,
    Config,
    WebhookConfig,
    load_config,
)
from soketi_impl.errors import ConfigError


def write(tmp_path: Path, data: Any, name: str = "soketi.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def json_or_str(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def app(**fields: Any) -> dict[str, Any]:
    return {"id": "1", "key": "k1", "secret": "s1", **fields}


# -- defaults ----------------------------------------------------------------


def test_defaults_with_an_empty_environment() -> None:
    cfg = load_config(environ={})
    assert (cfg.host, cfg.port, cfg.path_prefix, cfg.debug) == ("0.0.0.0", 6001, "", False)
    assert cfg.channel_cache_ttl == 3600
    assert cfg.activity_timeout == 30
    assert cfg.max_message_size_kb == 100
    assert cfg.http_max_request_size_kb == 100 * 1024  # soketi: 100 MB
    assert cfg.cors_origins == ["*"]
    assert (cfg.metrics_enabled, cfg.metrics_host, cfg.metrics_port, cfg.metrics_prefix) == (
        False,
        "0.0.0.0",
        9601,
        "soketi_",
    )
    assert cfg.adapter_driver == "local"
    assert (cfg.redis_host, cfg.redis_port, cfg.redis_db) == ("127.0.0.1", 6379, 0)
    assert cfg.redis_password is None and cfg.redis_key_prefix == ""
    assert cfg.shutdown_grace_period_ms == 3000
    assert cfg.user_authentication_timeout_ms == 30000
    assert (cfg.webhooks_batching, cfg.webhooks_batching_duration_ms) == (False, 50)
    assert cfg.warnings == []
    [only] = cfg.apps
    assert only == AppConfig(id="app-id", key="app-key", secret="app-secret")
    assert only.enabled and not only.enable_client_messages and not only.enable_user_authentication
    assert only.max_connections == -1 and only.max_client_events_per_second == -1
    assert only.max_presence_members_per_channel == 100
    assert only.max_presence_member_size_in_kb == 2
    assert only.max_event_payload_in_kb == 100 and only.max_event_batch_size == 10
    assert cfg.app_by_key("app-key") is only
    assert cfg.app_by_id("app-id") is only
    assert cfg.app_by_key("app-id") is None and cfg.app_by_id("nope") is None


def test_config_constructed_directly_equals_the_loaded_defaults() -> None:
    assert Config() == load_config(environ={})
    assert Config().max_message_size_bytes == 102400


def test_os_environ_is_the_default_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOKETI_PORT", "6123")
    assert load_config().port == 6123


# -- the environment -----------------------------------------------------------


def test_env_values_parse_as_json() -> None:
    cfg = load_config(
        environ={
            "SOKETI_DEBUG": "true",
            "SOKETI_METRICS_ENABLED": "1",
            "SOKETI_PORT": "7001",
            "SOKETI_DEFAULT_APP_MAX_CONNS": "1000",
            "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
            "SOKETI_DEFAULT_APP_USER_AUTHENTICATION": "true",
            "SOKETI_EVENT_MAX_SIZE_IN_KB": "4.5",
            "SOKETI_CORS_ORIGIN": '["https://a.example", "https://b.example"]',
            "SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps(
                [{"url": "http://127.0.0.1:9/hook", "event_types": ["channel_occupied"]}]
            ),
        }
    )
    assert cfg.debug is True and cfg.metrics_enabled is True
    assert cfg.port == 7001
    assert cfg.event_max_payload_kb == 4.5
    assert cfg.cors_origins == ["https://a.example", "https://b.example"]
    [a] = cfg.apps
    assert a.max_connections == 1000
    assert a.enable_client_messages and a.enable_user_authentication
    assert a.max_event_payload_in_kb == 4.5  # the server-wide limit is the app's default
    assert a.webhooks == [
        WebhookConfig(url="http://127.0.0.1:9/hook", event_types=["channel_occupied"])
    ]


def test_env_strings_stay_verbatim() -> None:
    # JSON would turn these into 7 and 100000.0; soketi would too, we do not.
    cfg = load_config(
        environ={
            "SOKETI_DEFAULT_APP_ID": "007",
            "SOKETI_DEFAULT_APP_KEY": '"quoted"',
            "SOKETI_DEFAULT_APP_SECRET": "1e5",
            "SOKETI_DB_REDIS_PASSWORD": "true",
            "SOKETI_CORS_ORIGIN": "https://a.example, https://b.example",
        }
    )
    assert (cfg.apps[0].id, cfg.apps[0].key, cfg.apps[0].secret) == ("007", "quoted", "1e5")
    assert cfg.redis_password == "true"
    assert cfg.cors_origins == ["https://a.example", "https://b.example"]


@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
    ).filter(lambda s: not s.startswith('"'))
)
def test_any_app_id_from_the_env_is_kept_as_written(value: str) -> None:
    cfg = load_config(environ={"SOKETI_DEFAULT_APP_ID": value})
    assert cfg.apps[0].id == value
    assert cfg.app_by_id(value) is cfg.apps[0]


def test_empty_env_values_are_unset() -> None:
    cfg = load_config(environ={"SOKETI_PORT": "", "SOKETI_DB_REDIS_PASSWORD": ""})
    assert cfg.port == 6001 and cfg.redis_password is None


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {"port": 7000, "debug": True, "metrics.port": 9700, "appManager.array.apps": [app()]},
    )
    cfg = load_config(path, environ={"SOKETI_PORT": "7100", "SOKETI_DEFAULT_APP_KEY": "env-key"})
    assert cfg.port == 7100  # the environment wins
    assert cfg.debug is True and cfg.metrics_port == 9700  # the file stays where not overridden
    # soketi's SOKETI_DEFAULT_APP_* set appManager.array.apps.0.*: the file's first app
    assert (cfg.apps[0].id, cfg.apps[0].key, cfg.apps[0].secret) == ("1", "env-key", "s1")
    assert cfg.app_by_key("env-key") is cfg.apps[0] and cfg.app_by_key("k1") is None


def test_soketi_names_for_every_implemented_setting(tmp_path: Path) -> None:
    env = {
        "SOKETI_HOST": "127.0.0.1",
        "SOKETI_PATH_PREFIX": "ws/",
        "SOKETI_ACTIVITY_TIMEOUT": "60",
        "SOKETI_WEBSOCKET_MAX_MESSAGE_SIZE_IN_KB": "64",
        "SOKETI_HTTP_MAX_REQUEST_SIZE": "2",
        "SOKETI_CHANNEL_LIMITS_MAX_NAME_LENGTH": "150",
        "SOKETI_CHANNEL_CACHE_TTL": "60",
        "SOKETI_EVENT_MAX_BATCH_SIZE": "5",
        "SOKETI_EVENT_MAX_CHANNELS_AT_ONCE": "20",
        "SOKETI_EVENT_MAX_NAME_LENGTH": "50",
        "SOKETI_PRESENCE_MAX_MEMBERS": "7",
        "SOKETI_PRESENCE_MAX_MEMBER_SIZE": "1",
        "SOKETI_METRICS_HOST": "127.0.0.1",
        "SOKETI_METRICS_SERVER_PORT": "9700",
        "SOKETI_METRICS_PROMETHEUS_PREFIX": "x_",
        "SOKETI_METRICS_DRIVER": "prometheus",
        "SOKETI_ADAPTER_DRIVER": "redis",
        "SOKETI_ADAPTER_REDIS_PREFIX": "pfx",
        "SOKETI_DB_REDIS_HOST": "redis.local",
        "SOKETI_DB_REDIS_PORT": "6380",
        "SOKETI_DB_REDIS_DB": "2",
        "SOKETI_DB_REDIS_USERNAME": "u",
        "SOKETI_DB_REDIS_PASSWORD": "p",
        "SOKETI_DB_REDIS_KEY_PREFIX": "kp:",
        "SOKETI_SHUTDOWN_GRACE_PERIOD": "100",
        "SOKETI_USER_AUTHENTICATION_TIMEOUT": "5000",
        "SOKETI_WEBHOOKS_BATCHING": "true",
        "SOKETI_WEBHOOKS_BATCHING_DURATION": "20",
        "SOKETI_DEFAULT_APP_ENABLED": "false",
        "SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC": "10",
        "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "11",
        "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC": "12",
        "SOKETI_APP_MANAGER_DRIVER": "array",
        "SOKETI_MODE": "full",
    }
    cfg = load_config(environ=env)
    assert cfg.warnings == []
    assert cfg.host == "127.0.0.1" and cfg.path_prefix == "/ws"
    assert cfg.activity_timeout == 60 and cfg.max_message_size_kb == 64
    assert (
        cfg.http_max_request_size_kb == 2048 and cfg.http_max_request_size_bytes == 2 * 1024 * 1024
    )
    assert cfg.channel_max_name_length == 150 and cfg.channel_cache_ttl == 60
    assert (
        cfg.event_max_batch_size,
        cfg.event_max_channels_at_once,
        cfg.event_max_name_length,
    ) == (
        5,
        20,
        50,
    )
    assert (cfg.presence_max_members, cfg.presence_max_member_size_kb) == (7, 1)
    assert (cfg.metrics_host, cfg.metrics_port, cfg.metrics_prefix) == ("127.0.0.1", 9700, "x_")
    assert (cfg.adapter_driver, cfg.adapter_redis_prefix) == ("redis", "pfx")
    assert (cfg.redis_host, cfg.redis_port, cfg.redis_db) == ("redis.local", 6380, 2)
    assert (cfg.redis_username, cfg.redis_password, cfg.redis_key_prefix) == ("u", "p", "kp:")
    assert (cfg.shutdown_grace_period_ms, cfg.user_authentication_timeout_ms) == (100, 5000)
    assert (cfg.webhooks_batching, cfg.webhooks_batching_duration_ms) == (True, 20)
    a = cfg.apps[0]
    assert a.enabled is False
    assert (
        a.max_client_events_per_second,
        a.max_backend_events_per_second,
        a.max_read_requests_per_second,
    ) == (10, 11, 12)
    # the server-wide limits became the default app's
    assert (a.max_channel_name_length, a.max_event_batch_size, a.max_event_channels_at_once) == (
        150,
        5,
        20,
    )
    assert (a.max_event_name_length, a.max_presence_members_per_channel) == (50, 7)
    assert a.max_presence_member_size_in_kb == 1

    # The same settings by their file keys give the same result.
    path = write(tmp_path, {ENV_VARIABLES[name]: json_or_str(value) for name, value in env.items()})
    from_file = load_config(path, environ={})
    assert from_file == cfg


def test_env_variable_tables() -> None:
    assert all(name.startswith("SOKETI_") for name in ENV_VARIABLES)
    assert all(name.startswith("SOKETI_") for name in NOT_IMPLEMENTED_ENV)
    assert not set(ENV_VARIABLES) & set(NOT_IMPLEMENTED_ENV)
    assert "SOKETI_SSL_CERT" in ENV_VARIABLES and "SOKETI_QUEUE_SQS_URL" in NOT_IMPLEMENTED_ENV
    assert len(WEBHOOK_EVENT_TYPES) == 7


# -- warnings ------------------------------------------------------------------


def test_unknown_env_variables_warn_and_do_not_fail(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="soketi_impl.config"):
        cfg = load_config(
            environ={"SOKETI_NOT_A_THING": "1", "SOKETI_IMPL_NO_EXTENSIONS": "1", "OTHER": "x"}
        )
    assert cfg.port == 6001
    assert len(cfg.warnings) == 1
    assert "SOKETI_NOT_A_THING" in cfg.warnings[0]
    assert "SOKETI_NOT_A_THING" in caplog.text
    assert "SOKETI_IMPL_NO_EXTENSIONS" not in caplog.text  # our own knob
    assert "OTHER" not in caplog.text


def test_unknown_settings_warn_alike_from_the_file_and_the_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown name is ignored with the same warning wherever it was written, with
    the nearest known name as a hint; the known settings beside it still apply."""
    path = write(
        tmp_path,
        {
            "nope": 1,
            "metrics": {"enabeld": True},
            "database.redis.hots": "x",
            "port": 7002,
            APPS: [app(bogus=1, enableClientMesages=True)],
        },
    )
    with caplog.at_level(logging.WARNING, logger="soketi_impl.config"):
        from_file = load_config(path, environ={})
        from_env = load_config(
            environ={
                "SOKETI_PROT": "7003",
                "SOKETI_METRICS_ENABELD": "true",
                "SOKETI_DEFAULT_APP_SECRT": "s",
                "SOKETI_PORT": "7002",
            }
        )
    assert from_file.port == 7002 and from_env.port == 7002
    assert not from_file.metrics_enabled and not from_env.metrics_enabled
    assert from_file.apps[0].enable_client_messages is False
    assert from_env.apps[0].secret == "app-secret"
    assert sorted(from_file.warnings) == [
        f"unknown setting {APPS}.0.bogus ignored",
        f"unknown setting {APPS}.0.enableClientMesages ignored"
        " (did you mean enableClientMessages?)",
        "unknown setting database.redis.hots ignored (did you mean database.redis.host?)",
        "unknown setting metrics.enabeld ignored (did you mean metrics.enabled?)",
        "unknown setting nope ignored",
    ]
    assert sorted(from_env.warnings) == [
        "unknown setting SOKETI_DEFAULT_APP_SECRT ignored"
        " (did you mean SOKETI_DEFAULT_APP_SECRET?)",
        "unknown setting SOKETI_METRICS_ENABELD ignored (did you mean SOKETI_METRICS_ENABLED?)",
        "unknown setting SOKETI_PROT ignored (did you mean SOKETI_PORT?)",
    ]
    assert "SOKETI_PROT" in caplog.text and "metrics.enabeld" in caplog.text


def test_unimplemented_soketi_variables_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="soketi_impl.config"):
        cfg = load_config(
            environ={
                "SOKETI_CLUSTER_PORT": "11002",
                "SOKETI_QUEUE_DRIVER": "sync",  # what we do anyway: no warning
                "SOKETI_RATE_LIMITER_DRIVER": "redis",
            }
        )
    assert len(cfg.warnings) == 2
    assert "SOKETI_CLUSTER_PORT" in caplog.text and "SOKETI_RATE_LIMITER_DRIVER" in caplog.text
    assert "SOKETI_QUEUE_DRIVER" not in caplog.text


def test_unimplemented_soketi_file_keys_warn(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "appManager.dynamodb.table": "apps",
            "queue": {"sqs": {"region": "eu-west-1"}},
            "cluster.port": 11002,
            "cors": {"credentials": True, "origin": ["https://a.example"]},
        },
    )
    cfg = load_config(path, environ={})
    assert cfg.cors_origins == ["https://a.example"]
    assert sorted(w.split(" ")[0] for w in cfg.warnings) == [
        "appManager.dynamodb.table",
        "cluster.port",
        "queue.sqs.region",
    ]


# -- the file ------------------------------------------------------------------


def test_several_apps_from_a_file(tmp_path: Path) -> None:
    hook = {
        "url": "https://example.com/hook",
        "event_types": ["member_added", "member_removed"],
        "headers": {"X-Custom": "1"},
        "filter": {"channel_name_starts_with": "presence-", "channel_name_ends_with": "-room"},
    }
    path = write(
        tmp_path,
        {
            "presence.maxMembersPerChannel": 50,
            "appManager.array.apps": [
                {"id": 1, "key": "k1", "secret": "s1"},
                {
                    "id": "two",
                    "key": "k2",
                    "secret": "s2",
                    "enabled": False,
                    "enableClientMessages": True,
                    "enableUserAuthentication": True,
                    "maxConnections": 10,
                    "maxClientEventsPerSecond": 5,
                    "maxBackendEventsPerSecond": 6,
                    "maxReadRequestsPerSecond": 7,
                    "maxPresenceMembersPerChannel": 3,
                    "maxPresenceMemberSizeInKb": 0.5,
                    "maxChannelNameLength": 64,
                    "maxEventChannelsAtOnce": 4,
                    "maxEventNameLength": 32,
                    "maxEventPayloadInKb": "8",
                    "maxEventBatchSize": 2,
                    "webhooks": [hook],
                },
            ],
        },
    )
    cfg = load_config(path, environ={})
    one, two = cfg.apps
    assert one.id == "1"  # numbers become strings
    assert one.max_presence_members_per_channel == 50  # from the server-wide limit
    assert two.max_presence_members_per_channel == 3  # its own wins
    assert two == AppConfig(
        id="two",
        key="k2",
        secret="s2",
        enabled=False,
        enable_client_messages=True,
        enable_user_authentication=True,
        max_connections=10,
        max_client_events_per_second=5,
        max_backend_events_per_second=6,
        max_read_requests_per_second=7,
        max_presence_members_per_channel=3,
        max_presence_member_size_in_kb=0.5,
        max_channel_name_length=64,
        max_event_channels_at_once=4,
        max_event_name_length=32,
        max_event_payload_in_kb=8.0,
        max_event_batch_size=2,
        webhooks=[
            WebhookConfig(
                url="https://example.com/hook",
                event_types=["member_added", "member_removed"],
                headers={"X-Custom": "1"},
                filter_starts_with="presence-",
                filter_ends_with="-room",
            )
        ],
    )
    assert cfg.app_by_id("1") is one and cfg.app_by_key("k2") is two
    assert cfg.app_by_id("two") is two
    [webhook] = two.webhooks
    assert webhook.matches_channel("presence-chat-room")
    assert not webhook.matches_channel("presence-chat")
    assert not webhook.matches_channel("private-chat-room")


def test_nested_objects_and_flat_app_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "metrics": {"enabled": True, "prometheus": {"prefix": "p_"}},
            "database": {"redis": {"host": "r"}},
            "appManager.array.apps.0.key": "flat-key",
            "appManager.array.apps.0.maxConnections": 3,
        },
    )
    cfg = load_config(path, environ={})
    assert cfg.metrics_enabled and cfg.metrics_prefix == "p_" and cfg.redis_host == "r"
    [a] = cfg.apps
    assert (a.id, a.key, a.secret, a.max_connections) == ("app-id", "flat-key", "app-secret", 3)


def test_soketi_alternative_app_field_spellings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "appManager.array.apps": [
                {
                    "AppId": "1",
                    "AppKey": "k",
                    "AppSecret": "s",
                    "max_connections": 9,
                    "enable_client_messages": True,
                    "max_client_events_per_sec": 4,
                }
            ]
        },
    )
    [a] = load_config(path, environ={}).apps
    assert (a.id, a.key, a.secret) == ("1", "k", "s")
    assert (a.max_connections, a.enable_client_messages, a.max_client_events_per_second) == (
        9,
        True,
        4,
    )


def test_webhook_filter_and_headers_are_optional(tmp_path: Path) -> None:
    hook = {"url": "http://127.0.0.1:1/h", "event_types": sorted(WEBHOOK_EVENT_TYPES)}
    path = write(tmp_path, {"appManager.array.apps": [app(webhooks=[hook])]})
    [webhook] = load_config(path, environ={}).apps[0].webhooks
    assert webhook.headers == {} and webhook.filter_starts_with is None
    assert webhook.filter_ends_with is None and webhook.matches_channel("anything")
    assert set(webhook.event_types) == WEBHOOK_EVENT_TYPES


def test_path_prefix_is_normalised() -> None:
    assert load_config(environ={"SOKETI_PATH_PREFIX": "/"}).path_prefix == ""
    assert load_config(environ={"SOKETI_PATH_PREFIX": "/a/b/"}).path_prefix == "/a/b"


# -- validation: every error names the key ---------------------------------------

APPS = "appManager.array.apps"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"port": "abc"}, "port"),
        ({"port": 70000}, "port"),
        ({"port": 6001.5}, "port"),
        ({"metrics.port": True}, "metrics.port"),
        ({"debug": "maybe"}, "debug"),
        ({"adapter.driver": "cluster"}, "adapter.driver"),
        ({"adapter.nats.timeout": 0}, "adapter.nats.timeout"),
        ({"adapter.nats.servers": [1]}, "adapter.nats.servers"),
        ({"adapter.nats.nodesNumber": 0}, "adapter.nats.nodesNumber"),
        ({"appManager.driver": "dynamodb"}, "appManager.driver"),
        ({"appManager.mysql.table": "apps; drop"}, "appManager.mysql.table"),
        ({"metrics.driver": "pushgateway"}, "metrics.driver"),
        ({"eventLimits.maxPayloadInKb": 0}, "eventLimits.maxPayloadInKb"),
        ({"eventLimits.maxBatchSize": "ten"}, "eventLimits.maxBatchSize"),
        ({"host": ""}, "host"),
        ({"cors.origin": [1]}, "cors.origin"),
        ({APPS: "not a list"}, APPS),
        ({APPS: ["not an object"]}, f"{APPS}.0"),
        ({APPS: [{"id": "1", "key": "k"}]}, f"{APPS}.0.secret"),
        ({APPS: [{"id": "1", "secret": "s"}]}, f"{APPS}.0.key"),
        ({APPS: [{"key": "k", "secret": "s"}]}, f"{APPS}.0.id"),
        ({APPS: [app(key="")]}, f"{APPS}.0.key"),
        ({APPS: [app(secret=None)]}, f"{APPS}.0.secret"),
        ({APPS: [app(maxConnections="x")]}, f"{APPS}.0.maxConnections"),
        ({APPS: [app(maxConnections=-2)]}, f"{APPS}.0.maxConnections"),
        ({APPS: [app(enabled="yes")]}, f"{APPS}.0.enabled"),
        ({APPS: [app(maxConnections=1, max_connections=2)]}, f"{APPS}.0.max_connections"),
        ({APPS: [app(webhooks={"url": "http://x"})]}, f"{APPS}.0.webhooks"),
        ({APPS: [app(webhooks=["http://x"])]}, f"{APPS}.0.webhooks.0"),
        ({APPS: [app(webhooks=[{"event_types": ["client_event"]}])]}, f"{APPS}.0.webhooks.0.url"),
        (
            {APPS: [app(webhooks=[{"url": "ftp://x", "event_types": ["client_event"]}])]},
            f"{APPS}.0.webhooks.0.url",
        ),
        ({APPS: [app(webhooks=[{"url": "http://x"}])]}, f"{APPS}.0.webhooks.0.event_types"),
        (
            {APPS: [app(webhooks=[{"url": "http://x", "event_types": ["client_event", "typo"]}])]},
            f"{APPS}.0.webhooks.0.event_types.1",
        ),
        (
            {
                APPS: [
                    app(
                        webhooks=[
                            {
                                "lambda_function": "f",
                                "url": "http://x",
                                "event_types": ["cache_miss"],
                            }
                        ]
                    )
                ]
            },
            f"{APPS}.0.webhooks.0.lambda_function",
        ),
        (
            {
                APPS: [
                    app(
                        webhooks=[
                            {"url": "http://x", "event_types": ["cache_miss"], "headers": {"a": 1}}
                        ]
                    )
                ]
            },
            f"{APPS}.0.webhooks.0.headers",
        ),
        (
            {
                APPS: [
                    app(
                        webhooks=[
                            {
                                "url": "http://x",
                                "event_types": ["cache_miss"],
                                "filter": {"prefix": "a"},
                            }
                        ]
                    )
                ]
            },
            f"{APPS}.0.webhooks.0.filter.prefix",
        ),
        ({APPS: [app(), app(id="2")]}, f"{APPS}.1.key"),
        ({APPS: [app(), app(key="k2")]}, f"{APPS}.1.id"),
        ({"appManager.array.apps.1.key": "k"}, "appManager.array.apps.1.key"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key
    assert repr(key) in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SOKETI_PORT", "abc"),
        ("SOKETI_DEBUG", "maybe"),
        ("SOKETI_DEFAULT_APP_MAX_CONNS", "x"),
        ("SOKETI_DEFAULT_APP_WEBHOOKS", '{"url": "http://x", "event_types": ["cache_miss"]}'),
        ("SOKETI_DEFAULT_APP_WEBHOOKS", "not json"),
        ("SOKETI_ADAPTER_DRIVER", "cluster"),
        ("SOKETI_CHANNEL_CACHE_TTL", "-5"),
        ("SOKETI_EVENT_MAX_SIZE_IN_KB", "NaN"),
    ],
)
def test_env_errors_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={name: value})
    assert info.value.key.startswith(name)
    assert name in str(info.value)


def test_a_webhook_error_from_the_env_names_the_variable() -> None:
    hooks = json.dumps([{"url": "http://x", "event_types": ["nope"]}])
    with pytest.raises(ConfigError) as info:
        load_config(environ={"SOKETI_DEFAULT_APP_WEBHOOKS": hooks})
    assert info.value.key == "SOKETI_DEFAULT_APP_WEBHOOKS.0.event_types.0"


def test_env_can_break_a_file_app_into_a_duplicate(tmp_path: Path) -> None:
    path = write(tmp_path, {APPS: [app(), app(id="2", key="k2")]})
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"SOKETI_DEFAULT_APP_KEY": "k2"})
    assert info.value.key == f"{APPS}.1.key"


def test_an_empty_app_list_warns(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {APPS: []}), environ={})
    assert cfg.apps == [] and APPS in cfg.warnings[0]


@pytest.mark.parametrize(
    "text",
    ['{"port": 6001,}', "", "[1, 2]", '{"port": NaN}'],
    ids=["trailing-comma", "empty", "not-an-object", "nan"],
)
def test_a_bad_file_names_the_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == path


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.json")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == path
    assert "No such file" in str(info.value)


def test_duplicate_apps_in_a_config_built_in_code() -> None:
    with pytest.raises(ConfigError):
        Config(
            apps=[AppConfig(id="1", key="k", secret="s"), AppConfig(id="2", key="k", secret="s")]
        )
    cfg = Config()
    cfg.apps.append(AppConfig(id="2", key="k2", secret="s"))
    assert cfg.app_by_key("k2") is None  # indexed once ...
    cfg.reindex()
    assert cfg.app_by_key("k2") is cfg.apps[1]  # ... until reindex()


# -- settings other parts read: channel limit, master key, webhook queue bound ----------


def test_channels_per_connection_and_webhook_queue_bound(tmp_path: Path) -> None:
    cfg = load_config(environ={})
    assert cfg.max_channels_per_connection == 100
    assert cfg.webhooks_max_queue_bytes == 64 * 1024 * 1024
    cfg = load_config(
        environ={
            "SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION": "7",
            "SOKETI_WEBHOOKS_MAX_QUEUE_BYTES": "4096",
        }
    )
    assert (cfg.max_channels_per_connection, cfg.webhooks_max_queue_bytes) == (7, 4096)
    path = write(
        tmp_path, {"channelLimits": {"maxPerConnection": 3}, "webhooks.maxQueueBytes": 2048}
    )
    cfg = load_config(path, environ={})
    assert (cfg.max_channels_per_connection, cfg.webhooks_max_queue_bytes) == (3, 2048)
    with pytest.raises(ConfigError, match="SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION"):
        load_config(environ={"SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION": "0"})
    with pytest.raises(ConfigError, match="SOKETI_WEBHOOKS_MAX_QUEUE_BYTES"):
        load_config(environ={"SOKETI_WEBHOOKS_MAX_QUEUE_BYTES": "-1"})


KEY32 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 ASCII bytes


def test_encryption_master_key_from_env_and_file(tmp_path: Path) -> None:
    assert load_config(environ={}).apps[0].encryption_master_key_base64 is None
    cfg = load_config(environ={"SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64": KEY32})
    assert cfg.apps[0].encryption_master_key_base64 == KEY32
    path = write(
        tmp_path,
        {
            "appManager.array.apps": [
                app(encryptionMasterKeyBase64=KEY32),
                {"id": "2", "key": "k2", "secret": "s2", "encryption_master_key_base64": KEY32},
                {"id": "3", "key": "k3", "secret": "s3", "encryptionMasterKeyBase64": ""},
            ]
        },
    )
    keys = [a.encryption_master_key_base64 for a in load_config(path, environ={}).apps]
    assert keys == [KEY32, KEY32, None]


@pytest.mark.parametrize("value", ["abcd", "not base64 at all!", KEY32[:-4], KEY32 + "QUFB"])
def test_a_bad_master_key_names_the_variable_and_hides_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64": value})
    assert "SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64" in str(info.value)
    assert "32 bytes" in str(info.value) and value not in str(info.value)


# -- .env (soketi's dotenv) and app rows ------------------------------------------------


def test_dotenv_in_the_working_directory_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "# soketi's .env\n"
        "SOKETI_PORT=7010\n"
        "export SOKETI_DEFAULT_APP_KEY='from-dotenv'\n"
        'SOKETI_DEFAULT_APP_SECRET="quoted # not a comment"\n'
        "SOKETI_DEFAULT_APP_ID=${HOME}\n"  # no interpolation, as soketi's dotenv
        "SOKETI_DOTENV_TYPO=1\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    for name in [n for n in __import__("os").environ if n.startswith("SOKETI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SOKETI_PORT", "7011")  # the environment wins over .env
    cfg = load_config()
    assert cfg.port == 7011
    assert cfg.apps[0].key == "from-dotenv"
    assert cfg.apps[0].secret == "quoted # not a comment"
    assert cfg.apps[0].id == "${HOME}"
    assert cfg.warnings == ["unknown setting SOKETI_DOTENV_TYPO ignored"]
    assert "SOKETI_DEFAULT_APP_KEY" not in __import__("os").environ  # not written back
    # an explicit environ reads no .env unless one is named
    assert load_config(environ={}).port == 6001
    assert load_config(environ={}, env_file=str(tmp_path / ".env")).port == 7010
    assert load_config(environ={}, env_file=str(tmp_path / "missing.env")).port == 6001


def test_app_from_row_takes_sql_column_names() -> None:
    from soketi_impl.config import app_from_row

    server = load_config(environ={"SOKETI_PRESENCE_MAX_MEMBERS": "50"})
    row = {
        "id": 7,
        "key": "k7",
        "secret": "s7",
        "max_connections": 10,
        "enable_client_messages": 1,
        "enabled": 0,
        "max_client_events_per_sec": 5,
        "webhooks": '[{"url": "http://127.0.0.1:9/h", "event_types": ["client_event"]}]',
        "max_presence_members_per_channel": None,
        "created_at": "2024-01-01",
    }
    got = app_from_row(row, server, "apps row 7")
    assert (got.id, got.key, got.max_connections, got.max_client_events_per_second) == (
        "7", "k7", 10, 5,
    )
    assert got.enable_client_messages and not got.enabled
    assert got.max_presence_members_per_channel == 50  # NULL: the server default
    assert [w.url for w in got.webhooks] == ["http://127.0.0.1:9/h"]
    with pytest.raises(ConfigError, match="apps row 7.max_connections"):
        app_from_row({**row, "max_connections": "many"}, server, "apps row 7")
    with pytest.raises(ConfigError, match="apps row 7.secret"):
        app_from_row({"id": 1, "key": "k"}, server, "apps row 7")
