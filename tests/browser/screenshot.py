"""Take the dashboard screenshot of the docs (docs/dashboard.png) with some live traffic.

    python tests/browser/screenshot.py docs/dashboard.png --seconds 90

Starts ``soketi-impl start`` with two apps (one with a webhook to a local receiver
that refuses now and then), a few pusher-js clients (tests/js/dashboard_driver.js)
coming and going, events from the Python SDK at a changing rate, then opens the
dashboard in headless Chromium, expands one client event and saves a PNG.
Not a test: the browser tests (tests/test_dashboard_browser.py) check behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import pusher  # noqa: E402
from cdp import Chromium  # noqa: E402

from conftest import free_port, run_server  # noqa: E402
from test_dashboard_browser import TOKEN, Driver, set_value  # noqa: E402

APPS = [("123456", "test-key", "test-secret"), ("777", "shop-key", "shop-secret")]


async def receiver() -> tuple[web.AppRunner, int]:
    """A webhook receiver that answers 500 to one request in five."""

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500 if random.random() < 0.2 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def config(path: Path, metrics_port: int, hook_port: int) -> None:
    apps = []
    for i, (app_id, key, secret) in enumerate(APPS):
        app = {"id": app_id, "key": key, "secret": secret, "enableClientMessages": True}
        if i == 0:
            app["webhooks"] = [{"url": f"http://127.0.0.1:{hook_port}/hook",
                                "event_types": ["channel_occupied", "member_added", "client_event"]}]
        apps.append(app)
    path.write_text(json.dumps({
        "appManager.array.apps": apps, "metrics.port": metrics_port, "metrics.host": "127.0.0.1",
        "dashboard.enabled": True, "dashboard.token": TOKEN,
    }))


_next_client = iter(range(1_000_000))


async def clients(port: int, n: int) -> list[Driver]:
    started = []
    for _ in range(n):
        i = next(_next_client)
        app_id, key, secret = APPS[i % 2]
        room = ["chat-lobby", "presence-team", "private-orders"] if app_id == "123456" else ["prices", "presence-shop"]
        driver = await Driver.start(
            port, appId=app_id, key=key, secret=secret, channels=room, totalMs=600_000,
            user={"user_id": f"user-{i}", "user_info": {"name": f"User {i}"}},
            clientEvent={"channel": room[-1] if room[-1].startswith("private") else room[1],
                         "event": "client-typing", "data": {"user": f"user-{i}", "text": "hello " * 8}},
        )
        await driver.until(lambda r: r["t"] == "ready", "ready", 20)
        started.append(driver)
    return started


async def main(out: Path, seconds: float) -> None:
    runner, hook_port = await receiver()
    metrics_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "soketi.json"
        config(cfg, metrics_port, hook_port)
        with run_server("c", config_file=str(cfg)) as server:
            sdks = [pusher.Pusher(app_id=a, key=k, secret=s, host="127.0.0.1", port=server.port, ssl=False)
                    for a, k, s in APPS]
            drivers = await clients(server.port, 5)
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                rate = 2 + 6 * (1 + math.sin(elapsed / 12))
                for _ in range(int(rate)):
                    app = random.randrange(2)
                    channel = random.choice(["chat-lobby", "private-orders"] if app == 0 else ["prices"])
                    await asyncio.to_thread(sdks[app].trigger, channel, "update", {"n": random.randint(1, 999)})
                if random.random() < 0.08:  # clients come and go
                    gone = drivers.pop(random.randrange(len(drivers)))
                    await gone.bye()
                    drivers += await clients(server.port, 1)
                await asyncio.sleep(0.5)
            browser = await Chromium.launch(Path(tmp) / "profile")
            try:
                await browser.goto(f"http://127.0.0.1:{metrics_port}/dashboard")
                await browser.js(set_value("#token", TOKEN))
                loaded = browser.expect("Page.loadEventFired")
                await browser.js("document.querySelector('form').submit(), true")
                await asyncio.wait_for(loaded, 15)
                await browser.wait("document.querySelector('#status.ok')", "live")
                await asyncio.to_thread(sdks[0].trigger, "chat-lobby", "update", {"n": 1})
                await browser.wait("document.querySelectorAll('#channels tr').length > 2", "channels")
                # the newest rows: a client arriving, a webhook, a test event from the page
                drivers += await clients(server.port, 1)
                await browser.js(set_value("#t-channel", "chat-lobby"))
                await browser.js("document.querySelector('#t-send').click(), true")
                await browser.wait("document.querySelector('#t-result').textContent.includes('sent')", "sent")
                await browser.js("document.querySelector('.entry.kind-client_event').click(), true")
                await asyncio.sleep(1.5)  # one more sample on the charts (a picture, not a check)
                out.write_bytes(await browser.screenshot())
            finally:
                await browser.close()
                for d in drivers:
                    await d.kill()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=90)
    args = parser.parse_args()
    asyncio.run(main(args.out, args.seconds))
