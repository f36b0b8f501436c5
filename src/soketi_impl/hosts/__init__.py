"""Hosts: thin layers that carry bytes between a transport and the Pusher core.

- :mod:`.picows`: the default server, one port for WebSocket (picows) and HTTP (httptools)
- :mod:`.asgi`: an ASGI 3 application (uvicorn, or mounted in Starlette or FastAPI);
  public as :func:`soketi_impl.asgi.create_app`
- :mod:`.aiohttp`: routes and hooks for an ``aiohttp.web.Application``; public as
  :func:`soketi_impl.aiohttp.setup`
- :mod:`.link`: what the framework hosts share: one WebSocket tied to the core (text
  frames, bounded send queue with 4100, close ordering, the core always told)
"""
