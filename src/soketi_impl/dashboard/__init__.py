"""The debug dashboard: live console, charts, channels and test events, in the browser.

Off by default. ``SOKETI_DASHBOARD_ENABLED=true`` with ``SOKETI_DASHBOARD_TOKEN``
serves it on the metrics port (``SOKETI_METRICS_SERVER_PORT``, 9601) at
``http://HOST:9601/dashboard``: a login form takes the token, scripts send
``Authorization: Bearer <token>``. Plain HTML, CSS and JavaScript shipped in
``static/``: no build step, nothing loaded from the internet.

- :mod:`.feed`: the live feed, an observer of the core that only appends to bounded
  queues (a slow page drops its oldest entries and shows how many);
- :mod:`.sampler`: each app's counters once a second, for the charts;
- :mod:`.auth`: the token (constant-time) and the session cookie;
- :mod:`.web`: the routes; :mod:`.service`: :class:`Dashboard`, the wiring.

The feed and the charts are this node's; channel lists come through the adapter,
so with Redis they are the cluster's. The page says which.
"""

from __future__ import annotations

from .feed import Feed
from .service import Dashboard

__all__ = ["Dashboard", "Feed"]
