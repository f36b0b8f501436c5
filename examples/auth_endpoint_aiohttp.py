"""One aiohttp app serves Pusher (soketi's variables) and the auth endpoint pusher-js asks."""

import os

from aiohttp import web

import soketi_impl.aiohttp
from soketi_impl import authorize_channel

app = web.Application()
pusher = soketi_impl.aiohttp.setup(app)  # /app/{key}, the HTTP API, /ready
creds = pusher.config.apps[0]


async def auth(request: web.Request) -> web.Response:
    user = request.headers.get("X-User")  # replace with your session check
    if not user:
        raise web.HTTPForbidden()
    form = await request.post()
    channel, socket_id = str(form.get("channel_name", "")), str(form.get("socket_id", ""))
    member = {"user_id": user, "user_info": {"name": user}} if channel.startswith("presence-") else None
    try:
        return web.json_response(authorize_channel(creds.key, creds.secret, socket_id, channel, member))
    except ValueError as exc:  # a malformed socket id
        raise web.HTTPBadRequest(text=str(exc)) from None


app.router.add_post("/pusher/auth", auth)
web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
