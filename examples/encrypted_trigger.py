"""An in-process trigger on an end-to-end encrypted channel: the server encrypts, pusher-js decrypts.

Give the app a master key: SOKETI_DEFAULT_APP_ENCRYPTION_MASTER_KEY_BASE64 (32 random bytes,
base64), the same key the app's auth endpoint signs with (the SDK's encryptionMasterKeyBase64).
"""

import asyncio

from soketi_impl import HookEvent, Pusher, Server, load_config

pusher = Pusher(load_config())


@pusher.on_subscribed
async def welcome(ev: HookEvent) -> None:
    if ev.channel and ev.channel.startswith("private-encrypted-"):
        await pusher.trigger(ev.app_id, ev.channel, "welcome", {"secret": "only you can read this"})


async def main() -> None:
    server = Server(pusher=pusher)
    await server.start()
    print(f"listening on port {server.port}", flush=True)
    await asyncio.Future()  # serve until killed


asyncio.run(main())
