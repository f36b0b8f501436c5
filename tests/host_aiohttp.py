"""The aiohttp host as a server process for the real-client tests (see conftest.run_server).

Reads soketi's variables like ``soketi-impl start`` (``SOKETI_HOST``, ``SOKETI_PORT``,
the apps ...), serves them from an ``aiohttp.web.Application`` through
:func:`soketi_impl.aiohttp.setup`, and logs a "listening on" line when ready.
"""

from __future__ import annotations

import logging
import sys

from aiohttp import web

import soketi_impl.aiohttp


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="the app's own route")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app = web.Application()
    app.router.add_get("/hello", hello)
    pusher = soketi_impl.aiohttp.setup(app)
    host, port = pusher.config.host, pusher.config.port

    def ready(message: str) -> None:
        print(f"aiohttp host listening on http://{host}:{port}", file=sys.stderr, flush=True)

    web.run_app(app, host=host, port=port, print=ready, access_log=None)


if __name__ == "__main__":
    main()
