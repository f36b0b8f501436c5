"""Loading: the config file, then the environment (over a ``.env`` file), into a Config."""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from .model import DEFAULT_APP_ID, DEFAULT_APP_KEY, DEFAULT_APP_SECRET, AppConfig, Config
from .settings import (
    APP_ALIASES,
    APP_FIELDS,
    APP_FIELDS_BY_NAME,
    APP_ITEM_KEY,
    APPS_KEY,
    DEFAULT_APP_ENV,
    ENV_VARIABLES,
    SETTINGS_BY_KEY,
    Setting,
)
from .unimplemented import HARMLESS, NOT_IMPLEMENTED_ENV, is_leaf, not_implemented
from .values import Kind

__all__ = ["app_from_row", "load_config", "read_env_file"]

logger = logging.getLogger("soketi_impl.config")

#: soketi's dotenv reads ``.env`` from the working directory.
ENV_FILE = ".env"


def _parse_env(raw: str, kind: Kind) -> Any:
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
        if isinstance(value, dict) and not is_leaf(key) and not APP_ITEM_KEY.match(key):
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

    def set_setting(self, setting: Setting, value: Any, label: str) -> None:
        typed = setting.kind.coerce(value, label)
        if setting.attr is not None:
            self.values[setting.attr] = typed

    def app_slot(self, index: int, label: str) -> dict[str, Any]:
        apps = self.apps
        if apps is None:
            if index != 0:
                raise ConfigError(label, f"an app index within {APPS_KEY} (0 to 0)", index)
            return self.default_app
        if index < len(apps):
            return apps[index]
        if index == len(apps):
            apps.append({})
            return apps[index]
        raise ConfigError(label, f"an app index within {APPS_KEY} (0 to {len(apps)})", index)

    def unknown(self, label: str, name: str, known: Iterable[str]) -> None:
        """Warn about a setting nobody knows, the same way for the file and the environment."""
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.warn(f"unknown setting {label} ignored{hint}")

    def set_app_field(self, slot: dict[str, Any], name: str, value: Any, label: str) -> None:
        canonical = name if name in APP_FIELDS_BY_NAME else APP_ALIASES.get(name)
        if canonical is None:
            self.unknown(label, name, APP_FIELDS_BY_NAME)
            return
        spec = APP_FIELDS_BY_NAME[canonical]
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
                canonical = name if name in APP_FIELDS_BY_NAME else APP_ALIASES.get(name)
                if canonical is not None and canonical in slot:
                    raise ConfigError(field_label, f"only one spelling of {canonical!r}")
                self.set_app_field(slot, name, field_value, field_label)
            for required in ("id", "key", "secret"):
                if required not in slot:
                    raise ConfigError(f"{item_label}.{required}", "a non-empty string (required)")
            apps.append(slot)
        self.apps = apps

    def set_unimplemented(self, key: str, value: Any, label: str) -> None:
        if key in HARMLESS and HARMLESS[key] == value:
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
        setting = SETTINGS_BY_KEY.get(key)
        if setting is not None:
            self.set_setting(setting, value, key)
            return
        if key == APPS_KEY:
            self.set_apps(value, key)
            return
        match = APP_ITEM_KEY.match(key)
        if match is not None:
            slot = self.app_slot(int(match.group(1)), key)
            self.set_app_field(slot, match.group(2), value, key)
            return
        if not_implemented(key):
            self.set_unimplemented(key, value, key)
            return
        self.unknown(key, key, _FILE_KEYS)

    def load_env(self, environ: Mapping[str, str]) -> None:
        for name in sorted(environ):
            if not name.startswith("SOKETI_") or name.startswith("SOKETI_IMPL_"):
                continue  # SOKETI_IMPL_* are our own build and debug knobs
            raw = environ[name]
            if raw == "":
                continue  # soketi treats an empty variable as unset
            setting = SETTINGS_BY_KEY.get(ENV_VARIABLES.get(name, ""))
            if setting is not None:
                self.set_setting(setting, _parse_env(raw, setting.kind), name)
            elif name in DEFAULT_APP_ENV:
                app_field = APP_FIELDS_BY_NAME[DEFAULT_APP_ENV[name]]
                slot = self.app_slot(0, name)
                self.set_app_field(slot, app_field.name, _parse_env(raw, app_field.kind), name)
            elif name in NOT_IMPLEMENTED_ENV:
                self.set_unimplemented(NOT_IMPLEMENTED_ENV[name], _json_or_raw(raw), name)
            else:
                self.unknown(name, name, _ENV_NAMES)

    # -- the result -------------------------------------------------------

    def build(self) -> Config:
        cfg = Config(**self.values)
        if cfg.dashboard_enabled and not cfg.dashboard_token:
            raise ConfigError(
                "SOKETI_DASHBOARD_TOKEN", "a token when SOKETI_DASHBOARD_ENABLED is true "
                "(the dashboard is only served behind it)",
            )
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
        apps = [_build_app(slot, cfg, f"{APPS_KEY}.{i}") for i, slot in enumerate(slots)]
        if not apps:
            self.warn(f"{APPS_KEY} is empty: no app can connect")
        cfg.apps = apps
        cfg.warnings = self.warnings
        cfg.reindex()
        return cfg


# What an unknown name is compared with, for the "did you mean" hint.
_FILE_KEYS: tuple[str, ...] = (*SETTINGS_BY_KEY, APPS_KEY, *NOT_IMPLEMENTED_ENV.values())
_ENV_NAMES: tuple[str, ...] = (*ENV_VARIABLES, *NOT_IMPLEMENTED_ENV)


def read_env_file(path: str = ENV_FILE) -> dict[str, str]:
    """The variables of a ``.env`` file, read as soketi's dotenv reads them.

    ``KEY=value`` lines, ``#`` comments, quoted values (double quotes expand ``\\n``),
    an optional ``export``; no ``${VAR}`` interpolation, as in soketi. A missing file
    gives ``{}``. python-dotenv does the parsing: quoting and multi-line values have
    enough corner cases that a home-made parser would get some wrong.
    """
    if not os.path.isfile(path):
        return {}
    from dotenv import dotenv_values

    values = dotenv_values(path, interpolate=False, encoding="utf-8")
    return {name: value for name, value in values.items() if value is not None}


def load_config(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    env_file: str | None = None,
) -> Config:
    """Read soketi's JSON config file (if any), then override it with ``SOKETI_*`` variables.

    ``environ`` defaults to ``os.environ`` over the variables of ``.env`` in the working
    directory (soketi loads it with dotenv; a variable set in the environment wins,
    and ``os.environ`` is left untouched). With an explicit ``environ`` no ``.env`` is
    read unless ``env_file`` names one.

    Raises :class:`~soketi_impl.errors.ConfigError` naming the key, variable or file
    for an unreadable or invalid file, a value of the wrong type, a webhook that is not
    soketi's shape, or a duplicate app key or id. Unknown settings, from the file or
    the environment alike, and soketi settings we do not implement are warned about
    and ignored (the warnings are logged and kept in :attr:`Config.warnings`).
    """
    loader = _Loader()
    if config_file is not None:
        loader.load_file(config_file)
    if environ is None:
        environ = {**read_env_file(env_file or ENV_FILE), **os.environ}
    elif env_file is not None:
        environ = {**read_env_file(env_file), **environ}
    loader.load_env(environ)
    return loader.build()


def app_from_row(row: Mapping[str, Any], config: Config, label: str = "app") -> AppConfig:
    """An :class:`AppConfig` from a mapping with soketi's app field names, in any of the
    spellings soketi accepts (``maxConnections``, ``max_connections``, the SQL
    ``apps`` table's ``max_client_events_per_sec`` ...).

    For app managers that read apps from elsewhere (a database row): other columns and
    ``None`` values are skipped, unset limits come from ``config``'s server-wide ones,
    and a bad value raises :class:`~soketi_impl.errors.ConfigError` naming
    ``{label}.{column}``. JSON text is accepted where a list is expected (``webhooks``).
    """
    slot: dict[str, Any] = {}
    for name, value in row.items():
        canonical = name if name in APP_FIELDS_BY_NAME else APP_ALIASES.get(name)
        if canonical is None or value is None:
            continue
        spec = APP_FIELDS_BY_NAME[canonical]
        if isinstance(value, str) and not spec.kind.text:
            value = _json_or_raw(value)
        slot[canonical] = spec.kind.coerce(value, f"{label}.{name}")
    return _build_app(slot, config, label)


def _build_app(slot: Mapping[str, Any], cfg: Config, label: str) -> AppConfig:
    for required in ("id", "key", "secret"):
        if required not in slot:
            raise ConfigError(f"{label}.{required}", "a non-empty string (required)")
    kwargs: dict[str, Any] = {}
    for spec in APP_FIELDS:
        if spec.name in slot:
            kwargs[spec.attr] = slot[spec.name]
        elif spec.server_default is not None:
            kwargs[spec.attr] = getattr(cfg, spec.server_default)
    return AppConfig(**kwargs)
