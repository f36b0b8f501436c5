"""soketi's configuration: its ``SOKETI_*`` environment variables and its JSON config file.

A soketi deployment must be able to switch to soketi-impl without touching its
configuration, so the names are soketi's (``src/cli/cli.ts`` and the docs at
docs.soketi.app), the defaults are soketi's, and so is the precedence: the config
file (flat dotted keys, ``{"port": 6001, "appManager.array.apps": [...]}``) is read
first, then every ``SOKETI_*`` variable that is set overrides it; variables come from
the environment over a ``.env`` file in the working directory, as soketi's dotenv.

Example::

    >>> cfg = load_config(environ={"SOKETI_PORT": "7001", "SOKETI_DEFAULT_APP_KEY": "k"})
    >>> cfg.port, cfg.app_by_key("k").id
    (7001, 'app-id')

Where we differ from soketi, on purpose:

- A value of the wrong type is reported at start, naming the key or variable
  (:class:`~soketi_impl.errors.ConfigError`), instead of crashing later.
- An unknown setting, in the file (a key, an app field) or the environment (a
  ``SOKETI_*`` variable), is ignored as soketi ignores it, but with a warning that
  names it and suggests the nearest known name. Both sources are treated alike.
- Environment values parse as JSON only for non-string settings, so an app id such
  as ``007`` or a secret such as ``1e5`` stays the string it was written as.
- Settings soketi lacks get soketi-style names (variable, file key):

  ====================================================== ===================================
  ``SOKETI_HOST``                                         ``host``
  ``SOKETI_ACTIVITY_TIMEOUT``                             ``activityTimeout``
  ``SOKETI_PONG_TIMEOUT``                                 ``pongTimeout``
  ``SOKETI_WEBSOCKET_MAX_MESSAGE_SIZE_IN_KB``             ``websocket.maxMessageSizeInKb``
  ``SOKETI_CORS_ORIGIN``                                  ``cors.origin``
  ``SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION`` (100)      ``channelLimits.maxPerConnection``
  ``SOKETI_WEBHOOKS_MAX_QUEUE_BYTES`` (64 MiB)            ``webhooks.maxQueueBytes``
  ``SOKETI_WEBHOOKS_RETRY_FOR`` (300000 ms)               ``webhooks.retryFor``
  ``SOKETI_WEBHOOKS_MAX_BACKOFF`` (60000 ms)              ``webhooks.maxBackoff``
  ``SOKETI_QUEUE_REDIS_MAX_JOBS`` (100000)                ``queue.redis.maxJobs``
  ``SOKETI_QUEUE_REDIS_LEASE`` (15000 ms)                 ``queue.redis.lease``
  ``SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64``     app field ``encryptionMasterKeyBase64``
  ====================================================== ===================================

  The master key is the one the official SDKs take for ``private-encrypted-``
  channels: 32 bytes in base64, checked at start.
- soketi variables we accept but do not implement (NATS, SQL app managers, SQS
  ...) are listed in :data:`NOT_IMPLEMENTED_ENV` and logged as warnings when set.

The package: :mod:`.model` (the dataclasses), :mod:`.values` (value checks),
:mod:`.settings` (the names), :mod:`.unimplemented`, :mod:`.loader` and :mod:`.tls`.
"""

from __future__ import annotations

from .loader import ENV_FILE, app_from_row, load_config, read_env_file
from .model import (
    DEFAULT_APP_ID,
    DEFAULT_APP_KEY,
    DEFAULT_APP_SECRET,
    WEBHOOK_EVENT_TYPES,
    AppConfig,
    Config,
    WebhookConfig,
)
from .settings import ENV_VARIABLES
from .tls import server_ssl_context
from .unimplemented import NOT_IMPLEMENTED_ENV

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_APP_KEY",
    "DEFAULT_APP_SECRET",
    "ENV_FILE",
    "ENV_VARIABLES",
    "NOT_IMPLEMENTED_ENV",
    "WEBHOOK_EVENT_TYPES",
    "AppConfig",
    "Config",
    "WebhookConfig",
    "app_from_row",
    "load_config",
    "read_env_file",
    "server_ssl_context",
]
