"""Pusher mounted at ``/pusher`` in a Starlette app: ``python examples/starlette_mount.py``.

Browsers connect with pusher-js ``wsPath: "/pusher"``; the app triggers in-process.
The Pusher starts and stops (closing clients with 4200) in the parent's lifespan.
"""

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from soketi_impl.asgi import create_app

pusher_app = create_app()
pusher = pusher_app.pusher
APP_ID = pusher.config.apps[0].id


async def create_order(request: Request) -> JSONResponse:
    await pusher.trigger(APP_ID, "orders", "created", await request.json())
    return JSONResponse({"ok": True})


routes = [Route("/orders", create_order, methods=["POST"]), Mount("/pusher", pusher_app)]
app = Starlette(routes=routes, lifespan=pusher_app.lifespan)

if __name__ == "__main__":
    uvicorn.run(app, host=pusher.config.host, port=pusher.config.port)
