"""Hooks on the picows server, configured by soketi's variables: print subscriptions and client events."""

import asyncio

from soketi_impl import HookEvent, Pusher, Server, load_config

pusher = Pusher(load_config())


@pusher.on_subscribed
async def subscribed(ev: HookEvent) -> None:
    print(f"{ev.socket_id} subscribed to {ev.channel}", flush=True)


@pusher.on_client_event
def client_event(ev: HookEvent) -> None:
    print(f"{ev.socket_id} sent {ev.event} on {ev.channel}: {ev.data}", flush=True)


async def main() -> None:
    server = Server(pusher=pusher)
    await server.start()
    print(f"listening on port {server.port}", flush=True)
    await asyncio.Future()  # serve until killed


asyncio.run(main())
