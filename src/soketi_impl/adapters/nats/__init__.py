"""Several server processes serving one set of apps, through NATS (soketi's NATS adapter).

``SOKETI_ADAPTER_DRIVER=nats`` makes :class:`~soketi_impl.server.Server` use
:class:`NatsAdapter` (install ``soketi-impl[nats]``). It does what the Redis
adapter does (:mod:`soketi_impl.adapters.redis`), with NATS's own tools:

Events
    The core delivers on this node at once; :meth:`NatsAdapter.publish` publishes
    the already-encoded frame on ``{prefix}soketi.events`` with a header line
    ``[node, app id, channel, except socket id, cache]``. Every other node hands it
    to its core (the connection is made with ``no_echo``, and a node skips its own
    messages anyway). All of a node's publishes go through one ordered, bounded
    queue (:mod:`.outbox`), so its events reach the others in the order it sent
    them.

Queries (``channels``, ``channel``, ``members``, ``terminate``)
    Published on ``{prefix}soketi.requests`` with this node's reply subject; every
    other node answers there, and the asker waits for as many answers as there are
    live nodes (their heartbeats say; ``SOKETI_ADAPTER_NATS_NODES_NUMBER`` overrides)
    or ``SOKETI_ADAPTER_NATS_REQUESTS_TIMEOUT`` (5 s), and its core merges (:mod:`.requests`).

Presence
    One JetStream KV key per presence channel, in the memory bucket
    ``soketi-cluster[-{prefix}]``, holds its members and, for each, the nodes that
    have a connection of it. Every change is a compare-and-set on the key's
    revision, so the write that moves a user from absent to present (or back)
    happens once, whatever runs at the same time, and the node that made it tells
    the observers (webhooks) once; the member limit is checked in the same write.
    Every node watches the bucket in revision order and turns each change of a
    key into ``remote_member_added`` / ``remote_member_removed`` for its core, and
    a joining connection is let in once that watch applied its own write, so it
    sees exactly the member events after its member list (:mod:`.store`,
    :mod:`.presence`). We chose JetStream KV over a table replicated by the nodes
    themselves because the compare-and-set gives one order of changes for every
    node without an election, and exactly-once events follow from it.

    Crash safety: every node publishes a heartbeat on ``{prefix}soketi.nodes``
    every ``heartbeat_interval`` (5 s); a node with members in the bucket that
    has not beaten for ``dead_after`` (15 s, the lease) is reaped by the next
    heartbeat of any live node: its members leave, with member_removed to every
    node's subscribers and the webhooks once (:mod:`.nodes`). A node killed with
    SIGKILL is gone from its channels within ``dead_after`` + ``heartbeat_interval``.
    A node reaped while alive (cut off longer than the lease) registers its
    members again when it is back.

Counts (channel subscriptions, users' signed-in connections)
    One key per counted name in the same bucket holds each node's share and the
    last change of their sum, written by compare-and-set; every node reports the
    changes from its watch, in write order, the writer as their origin, with the
    time NATS stored them (one clock for all). Shares follow the node's lease, as
    its members do: the reaper removes a dead node's shares (:mod:`.counts`).

When NATS goes away
    At start a node that cannot reach NATS (``SOKETI_ADAPTER_NATS_TIMEOUT``, 10 s,
    per server) or whose server has no JetStream refuses to start:
    :class:`NatsUnavailable` ("cannot connect to NATS at ...") and exit code 1.
    Later, events keep being delivered on the node that receives them, queries
    answer from this node, presence joins and leaves are answered from this node's
    members, and a warning at most every 10 s says so. nats-py reconnects for
    ever (its buffer of publishes made meanwhile is bounded: 8 MB, then they are
    dropped); once back, the node watches the bucket afresh (what it missed comes
    out as member events) and reconciles its members with it. A bucket that is
    lost (a NATS server restarted and its memory with it, or someone deleted it) is
    noticed at the next heartbeat: every node binds it again and registers its
    members and counts anew.

Cache channels are cached on every node, as with Redis. A presence channel that
empties leaves a small delete marker in the bucket (one per channel name used); a
count that falls to 0 keeps its key 30 s, then its writer deletes it.

Modules: :mod:`.adapter` (the class, life cycle, subscriptions), :mod:`.outbox`
(ordered bounded publishes), :mod:`.requests` (queries), :mod:`.store` (the KV
bucket, its replica and compare-and-set), :mod:`.presence` (joins, leaves,
reaping, reconciliation), :mod:`.counts` (cluster-wide counts), :mod:`.nodes`
(heartbeats and leases).
"""

from __future__ import annotations

from .adapter import NatsAdapter, NatsUnavailable

__all__ = ["NatsAdapter", "NatsUnavailable"]
