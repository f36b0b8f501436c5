"""Value checks: each takes a value and the label to name in an error (a dotted
file key or an environment variable) and returns the typed value, or raises
:class:`~soketi_impl.errors.ConfigError` naming that label.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .model import WEBHOOK_EVENT_TYPES, WebhookConfig

Coerce = Callable[[Any, str], Any]


@dataclass(frozen=True, slots=True)
class Kind:
    coerce: Coerce
    #: a string setting: environment values are taken verbatim, not parsed as JSON
    text: bool = False


def as_bool(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ConfigError(label, "a boolean (true or false)", value)


def as_number(value: Any, label: str) -> float:
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


def int_at_least(minimum: int, what: str) -> Coerce:
    def check(value: Any, label: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        else:
            try:
                number = as_number(value, label)
            except ConfigError:
                raise ConfigError(label, what, value) from None
            if not number.is_integer():
                raise ConfigError(label, what, value)
            result = int(number)
        if result < minimum:
            raise ConfigError(label, what, value)
        return result

    return check


def positive_number(value: Any, label: str) -> float:
    try:
        result = as_number(value, label)
    except ConfigError:
        raise ConfigError(label, "a number above 0", value) from None
    if result <= 0:
        raise ConfigError(label, "a number above 0", value)
    return result


def as_port(value: Any, label: str) -> int:
    # 0 lets the OS pick a free port (tests).
    result: int = int_at_least(0, "a port number (0-65535)")(value, label)
    if result > 65535:
        raise ConfigError(label, "a port number (0-65535)", value)
    return result


def as_str(value: Any, label: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(label, "a string", value)


def nonempty_str(value: Any, label: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise ConfigError(label, "a non-empty string", value)


def optional_str(value: Any, label: str) -> str | None:
    # soketi's null (and an empty variable) mean "not set".
    if value is None or value == "":
        return None
    return as_str(value, label)


def optional_int(minimum: int) -> Coerce:
    """An integer >= ``minimum``, or null (and an empty variable): not set."""
    check = int_at_least(minimum, f"an integer >= {minimum} or null")

    def optional(value: Any, label: str) -> int | None:
        if value is None or value == "":
            return None
        result: int = check(value, label)
        return result

    return optional


def cpu_count() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers_count(value: Any, label: str) -> int:
    """A number of worker processes: an integer >= 1, or 0 / ``"auto"``: one per CPU core."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return cpu_count()
    result: int = int_at_least(0, "an integer >= 0 or 'auto' (0 and auto: one per CPU core)")(value, label)
    return result if result > 0 else cpu_count()


def identifier(value: Any, label: str) -> str:
    """An app id, key or secret: a non-empty string; JSON numbers become strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise ConfigError(label, "a non-empty string", value)


def as_path_prefix(value: Any, label: str) -> str:
    prefix = as_str(value, label).strip()
    prefix = prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def str_list(value: Any, label: str) -> list[str]:
    if isinstance(value, str):
        # An environment variable may hold "a,b" instead of a JSON list.
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError(label, "a list of strings", value)


def choice(*allowed: str) -> Coerce:
    what = "one of " + ", ".join(repr(a) for a in allowed)

    def check(value: Any, label: str) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        raise ConfigError(label, what, value)

    return check


def master_key(value: Any, label: str) -> str | None:
    """32 bytes in base64 (an app's encryption master key); empty or null: not set."""
    text = optional_str(value, label)
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


def mb_as_kb(value: Any, label: str) -> float:
    return positive_number(value, label) * 1024


def webhooks_list(value: Any, label: str) -> list[WebhookConfig]:
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
        starts = optional_str(
            flt.get("channel_name_starts_with"), f"{label}.filter.channel_name_starts_with"
        )
        ends = optional_str(
            flt.get("channel_name_ends_with"), f"{label}.filter.channel_name_ends_with"
        )
    return WebhookConfig(
        url=url,
        event_types=list(event_types),
        headers=dict(headers),
        filter_starts_with=starts,
        filter_ends_with=ends,
    )


_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?")


def sql_name(value: Any, label: str) -> str:
    """A table name (``apps`` or ``schema.apps``): letters, digits, ``_``, ``$``; it is
    quoted in the queries, so only plain names are taken."""
    if isinstance(value, str) and _SQL_NAME.fullmatch(value):
        return value
    raise ConfigError(label, "a table name (letters, digits, _ and $; schema.table allowed)", value)


BOOL = Kind(as_bool)
NUMBER = Kind(as_number)
SQL_NAME = Kind(sql_name, text=True)
TEXT = Kind(as_str, text=True)
NONEMPTY = Kind(nonempty_str, text=True)
OPTIONAL = Kind(optional_str, text=True)
PORT = Kind(as_port)
ID = Kind(identifier, text=True)
POSITIVE = Kind(positive_number)


def int_kind(minimum: int) -> Kind:
    what = "an integer" if minimum <= -(2**31) else f"an integer >= {minimum}"
    return Kind(int_at_least(minimum, what))

