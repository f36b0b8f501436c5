"""A pusher-js auth endpoint on aiohttp (app credentials from soketi's variables)."""

import os

from aiohttp import web

from soketi_impl import authorize_channel

KEY, SECRET = os.environ["SOKETI_DEFAULT_APP_KEY"], os.environ["SOKETI_DEFAULT_APP_SECRET"]


async def auth(request: web.Request) -> web.Response:
    user = request.headers.get("X-User")  # replace with your session check
    if not user:
        raise web.HTTPForbidden()
    form = await request.post()
    channel = str(form.get("channel_name", ""))
    member = {"user_id": user, "user_info": {"name": user}} if channel.startswith("presence-") else None
    try:
        return web.json_response(authorize_channel(KEY, SECRET, str(form.get("socket_id")), channel, member))
    except ValueError as exc:  # a malformed socket id
        raise web.HTTPBadRequest(text=str(exc)) from None


app = web.Application()
app.router.add_post("/pusher/auth", auth)
web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
