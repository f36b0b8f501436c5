"""Write the seed corpus: real frames and requests for the fuzz targets to mutate.

``python fuzz/seeds.py`` rewrites ``fuzz/corpus/{protocol,http}/seed-*``. The HTTP
seeds are signed for the app and clock fixed in ``fuzz/fuzz_http.py``, so mutations
start from requests that pass the signature check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import urlencode

from soketi_impl.signing import sign_api_request

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_http import APP_ID, APP_KEY, APP_SECRET, NOW  # noqa: E402

HERE = Path(__file__).parent / "corpus"

FRAMES = [
    b'{"event":"pusher:ping","data":{}}',
    b'{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:0","channel_data":"{\\"user_id\\":1}"}}',
    b'{"event":"client-x","channel":"private-a","data":{"n":1e400,"s":"\\u00e9\\ud83d\\ude00","a":[1,2.5,-0]}}',
    b'{"event":"pusher:signin","data":{"auth":"k:0","user_data":"{\\"id\\":\\"1\\"}"}}',
    b'{"event":"e","data":123456789012345678901234567890,"data":null}',
    b' { "event" : "x" , "channel" : null , "d\\u0061ta" : "str" } ',
    '{"event":"é","data":"ü€"}'.encode(),
    b'{"event":"x","data":[[[[[[[[[]]]]]]]]]}',
]


def http_seeds() -> list[bytes]:
    def signed(method: str, path: str, body: bytes = b"", params: dict[str, str] | None = None) -> bytes:
        query = sign_api_request(APP_KEY, APP_SECRET, method, path, params, body, timestamp=NOW)
        head = f"{method} {path}?{urlencode(query)} HTTP/1.1\r\nHost: x\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        return (head + "\r\n").encode() + body

    event = json.dumps({"name": "e", "channel": "c", "data": "{\"a\":1}"}).encode()
    batch = json.dumps({"batch": [{"name": "e", "channel": "c", "data": "x"}] * 2}).encode()
    upgrade = (
        f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    reqs = [
        signed("POST", f"/apps/{APP_ID}/events", event),
        signed("POST", f"/apps/{APP_ID}/batch_events", batch),
        signed("GET", f"/apps/{APP_ID}/channels", params={"filter_by_prefix": "presence-", "info": "user_count"}),
        signed("GET", f"/apps/{APP_ID}/channels/presence-a", params={"info": "user_count,subscription_count"}),
        signed("GET", f"/apps/{APP_ID}/channels/presence-a/users"),
        signed("POST", f"/apps/{APP_ID}/users/1/terminate_connections", b"{}"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\n\r\nGET /accept-traffic HTTP/1.0\r\n\r\n",
        b"POST /apps/nope/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"OPTIONS /apps/123456/events HTTP/1.1\r\nOrigin: x\r\nExpect: 100-continue\r\n\r\n",
        upgrade,
        upgrade.replace(b"Version: 13", b"Version: 8"),
    ]
    # the first byte of an input is where the target cuts it into two reads
    return [bytes([len(r) // 2 % 256]) + r for r in reqs]


def main() -> None:
    """Write the seeds."""
    for name, items in (("protocol", [bytes([3]) + f for f in FRAMES]), ("http", http_seeds())):
        folder = HERE / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("seed-*"):
            old.unlink()
        for i, item in enumerate(items):
            (folder / f"seed-{i:02d}").write_bytes(item)
        print(f"{len(items)} seeds in {folder}")


if __name__ == "__main__":
    main()
