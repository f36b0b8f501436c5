"""Hosts: thin layers that carry bytes between a transport and the Pusher core.

- :mod:`.picows`: the default server, one port for WebSocket (picows) and HTTP (httptools)
"""
