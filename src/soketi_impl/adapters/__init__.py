"""Adapters carry facts between nodes: published frames, presence joins and leaves, query answers.

- :mod:`.base`: the interface and :class:`~.base.LocalAdapter` (one process)
- :mod:`.redis`: several processes or machines over Redis (``SOKETI_ADAPTER_DRIVER=redis``)
- :mod:`.nats`: the same over NATS with JetStream (``SOKETI_ADAPTER_DRIVER=nats``)
- :mod:`.local_ipc`: the workers of one machine through the supervisor's hub (``--workers N``)
- :mod:`.throttle`: rate-limited warnings, shared by the adapters
"""
