"""The WebSocket side of the front door: the upgrade answered, the connection handed to ``WSConn``.

The front door (:mod:`.picows`) has read and checked the upgrade request and made
the ``101`` (``accept_response``); :func:`hand_off` switches the transport to a
:class:`~soketi_impl.twins._ws_py.WSConn` (compiled twin: ``_ws_c``), which from
then on reads the client's frames and writes the server's, feeding the router.
Its docstring lists the checks every client frame goes through (RFC 6455 and the
rules of the protocol reference, section 2) and the bounds.

Per connection this keeps one ``WSConn`` and its ``Connection``: no picows objects,
no read or write buffer while the connection is idle.
"""

from __future__ import annotations

from typing import Any

from ..router import Router
from ..twins._ws import MAX_FRAGMENTS, MAX_WRITE_BUFFER, WSConn, wire_close_code

__all__ = ["MAX_FRAGMENTS", "MAX_WRITE_BUFFER", "PusherListener", "WSConn", "hand_off", "wire_close_code"]

#: The name this protocol had when the connection side was picows's listener.
PusherListener = WSConn


def hand_off(transport: Any, response: bytes, rest: bytes, router: Router, path: str,
             socket_id: str, opts: Any) -> WSConn:
    """Switch ``transport`` to a ``WSConn`` that writes ``response`` (the ``101``, from
    :func:`~soketi_impl.twins._ws_py.accept_response`) and reads ``rest`` (what the
    client sent after the request head). ``opts`` is the front door's options."""
    ws = WSConn(router, opts.max_frame_size)
    ws.start(transport, response, rest, socket_id, _shared_path(path))
    return ws


#: Request paths seen lately, each kept once: clients of one app mostly connect with
#: the same ``/app/KEY?protocol=7&client=js&version=...``, ~100 bytes a connection.
_PATHS: dict[str, str] = {}
_MAX_PATHS = 256


def _shared_path(path: str) -> str:
    """One ``str`` object for equal request paths (a bounded table, emptied when full)."""
    shared = _PATHS.get(path)
    if shared is None:
        if len(_PATHS) >= _MAX_PATHS:
            _PATHS.clear()
        _PATHS[path] = shared = path
    return shared
