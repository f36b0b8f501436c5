"""The Pusher Channels protocol on top of the seed API (Router handlers + per-app state)."""

from __future__ import annotations

from .server import AppState, PusherServer, Socket

__all__ = ["AppState", "PusherServer", "Socket"]
