"""Pusher inside an aiohttp app: ``python examples/aiohttp_app.py``.

``setup`` adds ``/app/{key}`` (WebSocket) and the HTTP API, starts the Pusher with
the app and closes its clients with 4200 on shutdown. The app triggers in-process.
"""

from aiohttp import web

import soketi_impl.aiohttp

app = web.Application()
pusher = soketi_impl.aiohttp.setup(app)  # soketi's variables, as `soketi-impl start`
APP_ID = pusher.config.apps[0].id


async def create_order(request: web.Request) -> web.Response:
    await pusher.trigger(APP_ID, "orders", "created", await request.json())
    return web.json_response({"ok": True})


app.router.add_post("/orders", create_order)

if __name__ == "__main__":
    web.run_app(app, host=pusher.config.host, port=pusher.config.port)
