"""The hot core, each area a pair of twins: ``_area_c`` (Cython) and ``_area_py`` (pure Python).

``_speedups`` is the one switch (``SOKETI_IMPL_NO_EXTENSIONS``); each dispatcher
``_area`` picks the compiled module or its twin once, at import:

- ``_conntable``: the connection table (id -> object)
- ``_protocol``: client frame parser, server event encoder, channel kinds
- ``_fanout``: per-app counters, coalescing sinks, the channel table and its broadcast loop
- ``_ws``: the server side of a WebSocket connection (frames in and out) over an asyncio transport
"""
