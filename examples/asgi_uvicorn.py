"""Pusher as an ASGI app under uvicorn: ``python examples/asgi_uvicorn.py``.

The same with no file at all::

    uvicorn --factory soketi_impl.asgi:create_app --host 0.0.0.0 --port 6001

Both read soketi's variables (``SOKETI_DEFAULT_APP_KEY``, ``SOKETI_PORT`` ...) and
serve ``/app/{key}`` WebSockets and the HTTP API; SIGTERM closes clients with 4200.
"""

import uvicorn

from soketi_impl.asgi import create_app

app = create_app()

if __name__ == "__main__":
    uvicorn.run(app, host=app.pusher.config.host, port=app.pusher.config.port)
