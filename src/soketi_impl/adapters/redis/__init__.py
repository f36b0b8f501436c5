"""Several server processes serving one set of apps, through Redis (soketi's horizontal scaling).

``SOKETI_ADAPTER_DRIVER=redis`` makes :class:`~soketi_impl.server.Server` use
:class:`RedisAdapter`. Every node keeps its own connections, as with the local
adapter, and Redis carries what must cross nodes:

Events
    The core delivers on this node at once; :meth:`RedisAdapter.publish`
    PUBLISHes the already-encoded frame, with the channel name, the excluded socket
    id, the cache flag and this node's id, on ``{prefix}events#{app id}``. Every
    other node hands it to its core, which broadcasts it to its own subscribers (a
    node skips its own messages). Socket ids are unique across
    nodes: their random part is drawn per socket (and Python reseeds ``random`` in
    a forked child), so the excluded socket is found only on the node that owns it.
    Every Redis command of a node goes through one ordered, pipelined queue on one
    connection, so a node's events reach the other nodes in the order it sent them.

Queries (``channels``, ``channel``, ``presence_members``, ``terminate_user``)
    The asking node answers from its own state and PUBLISHes a request on
    ``{prefix}requests``; every other node answers on ``{prefix}replies#{node id}``.
    PUBLISH returns how many subscribers received the request, which is the number
    of nodes (the asker included) at that instant, without the race of a separate
    ``PUBSUB NUMSUB``; the asker waits for that many replies or ``requests_timeout``
    (2 s) and its core merges what it has (:mod:`soketi_impl.pusher.api`).

Presence
    "One member per user id" holds across nodes through Redis state changed only
    by Lua scripts (atomic): ``{prefix}presence#{app}#{channel}`` maps user id ->
    user_info, ``...#counts`` maps user id -> how many *nodes* have that user in
    the channel, and ``{prefix}node#{node id}`` lists what this node registered.
    A node runs a script only for a user's first connection in a channel on that
    node and for its last one, so member_added goes out when the user's first
    connection anywhere joins and member_removed after the last one anywhere
    leaves. The script that moves a count 0 -> 1 or 1 -> 0 PUBLISHes the member
    fact to every node, whose core builds the member event (the node that ran it
    tells its observers, webhooks included, once).
    The join script then PUBLISHes "joined" with the member hash to the joining
    node, and only when that message arrives does the connection get its
    ``subscription_succeeded`` and enter the channel's broadcast list. Redis
    delivers one connection's pub/sub messages in the order the commands ran, so
    the new subscriber sees exactly the member events that came after its member
    list: none missed, none twice. The member limit
    (``max_presence_members_per_channel``) is enforced in the join script too.

    The trade-off is what happens when a node dies with members registered. Every
    node writes a heartbeat (Redis ``TIME``) into the sorted set ``{prefix}nodes``
    every ``heartbeat_interval`` (5 s); the heartbeat script also reaps every node
    silent for ``dead_after`` (15 s): it removes that node's registrations,
    publishes a member-removed fact for each user who left a channel because of it
    and returns them, and the reaping node tells its observers. So a crashed node's members linger for up
    to ``dead_after`` + ``heartbeat_interval``, and a node cut off from Redis for
    longer than ``dead_after`` is reaped while alive: when it comes back (its
    heartbeat finds itself missing) or after any failed Redis call, it reconciles
    the ``node#`` hash with its local members (registering the missing ones,
    withdrawing the stale ones, with the events that follow). A shorter
    ``dead_after`` reaps crashed nodes sooner but reaps a slow node sooner too. A
    clean stop withdraws the node at once. The alternative, asking the live nodes
    on every join, needs no cleanup, but every presence subscription then waits
    for the slowest node, and its answers race with concurrent joins; here the
    scripts serialise joins and leaves. The scripts touch keys they do not declare
    (the reaper walks a dead node's hash), so this is for one Redis server (or a
    primary with replicas), not Redis Cluster.

When Redis goes away
    At start a node that cannot reach Redis (connect timeout ``connect_timeout``,
    3 s) refuses to start: :class:`RedisUnavailable` ("cannot connect to Redis at
    host:port: ...") and exit code 1. Later, events keep being delivered on the
    node that receives them, queries answer from this node, presence falls back
    to this node's members, and a warning at most every 10 s says cross-node
    delivery is failing. Commands are retried after a second, the subscriber
    reconnects with backoff, and the heartbeat reconciles presence when Redis is
    back. Each heartbeat also publishes a beat to this node: a subscriber
    connection that hears nothing for ``dead_after`` is replaced (a vanished peer
    sends no RST). Events published while Redis was away are not replayed (Redis
    pub/sub keeps nothing).

Counts
    A channel's subscriptions and a user's signed-in connections are counted
    across nodes (:mod:`.counts`): each node stores its share in
    ``{prefix}count#{app}#{kind}#{name}`` through a Lua script that computes the
    total before and after, and PUBLISHes the change as a fact (to every node
    when the total crosses zero or the app wants subscription counts on every
    node, else to the node that made it). The core decides occupied, vacated
    (the debounce too, across nodes), subscription_count and watchlist events
    from those facts (:mod:`soketi_impl.pusher.counts`). The heartbeat's reaper
    removes a dead node's shares with its presence members; a closing node
    withdraws its shares and waits for the facts that follow.

Cache channels are cached on every node (each node stores the event it receives),
so ``info=cache`` and late subscribers see the last event wherever they connect.
Apps are those of the configuration at start.

Modules: :mod:`.adapter` (the class, life cycle), :mod:`.pipeline` (ordered
pipelined commands), :mod:`.pubsub` (the reader and the wire formats),
:mod:`.requests` (node-to-node queries), :mod:`.presence` (distributed presence and
reconciliation), :mod:`.counts` (cluster-wide counts), :mod:`.heartbeat`
(heartbeat and reaping).
"""

from __future__ import annotations

from .adapter import RedisAdapter, RedisUnavailable

__all__ = ["RedisAdapter", "RedisUnavailable"]
