"""A server node with short heartbeats, for the crash tests (a real process to SIGKILL).

``python tests/cluster_node.py HEARTBEAT_INTERVAL DEAD_AFTER`` serves the app of
the ``SOKETI_*`` environment with the adapter ``SOKETI_ADAPTER_DRIVER`` names,
prints ``listening on PORT`` when ready and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from cluster_util import make_adapter
from soketi_impl.config import load_config
from soketi_impl.server import Server


async def main(interval: float, dead_after: float) -> None:
    config = load_config()
    server = Server(config, adapter=make_adapter(config, heartbeat_interval=interval, dead_after=dead_after))
    await server.start()
    print(f"listening on {server.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), float(sys.argv[2])))
