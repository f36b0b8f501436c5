"""Several worker processes on one machine as one server, through the supervisor's hub.

``soketi-impl start --workers N`` (:mod:`soketi_impl.workers`) runs N workers on
one port and a :class:`~.hub.Hub` in the supervisor; each worker's
:class:`~.adapter.HubAdapter` connects to it over a unix socket (:mod:`.wire`:
length-prefixed frames). No Redis or NATS is needed; the hub is the authority for
presence and counts, and carries events and queries between the workers.
"""

from .adapter import HubAdapter, HubLink, HubUnavailable
from .hub import Hub

__all__ = ["Hub", "HubAdapter", "HubLink", "HubUnavailable"]
