"""TLS on the main port (SOKETI_SSL_*): wss:// and https:// with real clients.

The tests make their own certificate authority and a server certificate for
127.0.0.1 (``cryptography``, which the ``pusher`` SDK already pulls in), and every
client verifies the server against that CA: pusher-js and the Node SDK through
``NODE_EXTRA_CA_CERTS``, the Python SDK and ``websockets`` through an SSL context.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from conftest import APP_ID, APP_KEY, APP_SECRET, JS_DIR, ServerProcess, base_env, run_server
from soketi_impl.config import load_config, server_ssl_context
from soketi_impl.errors import ConfigError

WAIT = 10
#: what a client sees when the server drops it before any HTTP answer
REFUSED = (InvalidHandshake, ssl.SSLError, ConnectionError)
PASSPHRASE = "tls-test-passphrase"


@dataclass
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1 and localhost, its key (plain
    and encrypted), another CA's client certificate, and a key that matches nothing."""

    ca: Path
    cert: Path
    key: Path
    key_encrypted: Path
    other_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *, ca: bool = False, server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, passphrase: str | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key, stranger_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(5)
    )
    ca = _issue("soketi-impl test CA", ca_key, None, ca=True)
    stranger_ca_key = ec.generate_private_key(ec.SECP256R1())
    stranger_ca = _issue("another CA", stranger_ca_key, None, ca=True)
    return Pki(
        ca=_write_cert(d / "ca.pem", ca),
        cert=_write_cert(d / "cert.pem", _issue("127.0.0.1", server_key, (ca.subject, ca_key), server=True)),
        key=_write_key(d / "key.pem", server_key),
        key_encrypted=_write_key(d / "key-encrypted.pem", server_key, PASSPHRASE),
        other_key=_write_key(d / "other-key.pem", other_key),
        client_cert=_write_cert(d / "client.pem", _issue("client", client_key, (ca.subject, ca_key))),
        client_key=_write_key(d / "client-key.pem", client_key),
        stranger_cert=_write_cert(
            d / "stranger.pem", _issue("stranger", stranger_key, (stranger_ca.subject, stranger_ca_key))
        ),
        stranger_key=_write_key(d / "stranger-key.pem", stranger_key),
    )


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def tls_env(pki: Pki, **extra: str) -> dict[str, str]:
    return {"SOKETI_SSL_CERT": str(pki.cert), "SOKETI_SSL_KEY": str(pki.key), **extra}


@pytest.fixture
def tls_server(server_mode: str, pki: Pki) -> Iterator[ServerProcess]:
    with run_server(server_mode, env=tls_env(pki)) as server:
        yield server


def wss_url(port: int, key: str = APP_KEY) -> str:
    return f"wss://127.0.0.1:{port}/app/{key}?protocol=7&client=js&version=8.6.0"


# -- real clients against the server process ------------------------------------------


def test_start_log_names_wss_and_https(tls_server: ServerProcess) -> None:
    line = next(line for line in tls_server.log if "listening on" in line)
    assert f"wss://127.0.0.1:{tls_server.port}/app/" in line
    assert f"https://127.0.0.1:{tls_server.port}" in line


def test_pusher_js_force_tls_and_node_sdk_over_https(
    tls_server: ServerProcess, pki: Pki, node_modules: Path
) -> None:
    node = shutil.which("node")
    assert node is not None
    args = {"host": "127.0.0.1", "port": tls_server.port, "key": APP_KEY, "secret": APP_SECRET, "appId": APP_ID}
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(pki.ca)}
    proc = subprocess.run(
        [node, str(JS_DIR / "tls_driver.js"), json.dumps(args)],
        cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=60,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and records[-1] == {"t": "done"}, (proc.stdout, proc.stderr, tls_server.log)
    checks = {r["name"]: r for r in records if r["t"] == "check"}
    assert checks["connected"]["state"] == "connected"
    assert checks["connected"]["usingTLS"] is True
    assert checks["connected"]["url"].startswith(f"wss://127.0.0.1:{tls_server.port}/app/{APP_KEY}")
    assert checks["channel"]["status"] == 200
    assert checks["channel"]["body"]["occupied"] is True
    assert checks["channel"]["body"]["subscription_count"] == 1
    assert checks["trigger"]["status"] == 200
    assert checks["server-event"]["data"] == {"over": "https"}
    assert checks["client-event"]["data"] == {"from": "b"}


async def test_python_sdk_over_https_reaches_a_wss_subscriber(tls_server: ServerProcess, pki: Pki) -> None:
    import pusher
    from pusher.requests import RequestsBackend

    class TrustTestCA(RequestsBackend):  # type: ignore[misc]
        """The SDK pins its own CA bundle when ssl=True; trust the test's CA instead."""

        def __init__(self, client: Any, **options: Any) -> None:
            super().__init__(client, **options)
            self.options["verify"] = str(pki.ca)

    sdk = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1", port=tls_server.port,
        ssl=True, backend=TrustTestCA,
    )
    async with connect(wss_url(tls_server.port), ssl=client_context(pki)) as ws:
        established = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert established["event"] == "pusher:connection_established"
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["event"] == (
            "pusher_internal:subscription_succeeded"
        )
        info = await asyncio.to_thread(sdk.channels_info, "news", ["subscription_count"])
        assert info["channels"]["news"]["subscription_count"] == 1
        await asyncio.to_thread(sdk.trigger, "news", "over-https", {"n": 1})
        message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert (message["event"], json.loads(message["data"])) == ("over-https", {"n": 1})


async def test_plain_http_and_ws_are_not_served_on_a_tls_port(tls_server: ServerProcess) -> None:
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{tls_server.port}/") as resp:
                await resp.read()
    with pytest.raises(REFUSED):
        async with connect(f"ws://127.0.0.1:{tls_server.port}/app/{APP_KEY}?protocol=7", open_timeout=WAIT):
            pass


def _start_fails(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**base_env(0), **env}
    return subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start"], env=full, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "make_env"),
    [
        ("SOKETI_SSL_CERT", lambda p: tls_env(p, SOKETI_SSL_CERT="/nonexistent/cert.pem")),
        ("SOKETI_SSL_KEY", lambda p: tls_env(p, SOKETI_SSL_KEY=str(p.other_key))),
        ("SOKETI_SSL_PASS", lambda p: tls_env(p, SOKETI_SSL_KEY=str(p.key_encrypted), SOKETI_SSL_PASS="wrong")),
    ],
    ids=["missing-cert", "key-of-another-cert", "wrong-passphrase"],
)
def test_a_bad_tls_setting_is_a_start_error_naming_the_variable(
    pki: Pki, variable: str, make_env: Any
) -> None:
    proc = _start_fails(make_env(pki))
    assert proc.returncode == 2, proc.stderr
    assert variable in proc.stderr
    assert "configuration error" in proc.stderr and "Traceback" not in proc.stderr


# -- the context itself and the hand-off on both event loops -----------------------------


def test_context_from_the_config(pki: Pki) -> None:
    assert server_ssl_context(load_config(environ={})) is None
    assert server_ssl_context(load_config(environ=tls_env(pki))) is not None
    # an encrypted key with its passphrase; a certificate file that holds the key too
    encrypted = tls_env(pki, SOKETI_SSL_KEY=str(pki.key_encrypted), SOKETI_SSL_PASS=PASSPHRASE)
    assert server_ssl_context(load_config(environ=encrypted)) is not None
    combined = pki.cert.parent / "combined.pem"
    combined.write_bytes(pki.cert.read_bytes() + pki.key.read_bytes())
    assert server_ssl_context(load_config(environ={"SOKETI_SSL_CERT": str(combined)})) is not None
    with pytest.raises(ConfigError, match="SOKETI_SSL_CERT"):
        server_ssl_context(load_config(environ={"SOKETI_SSL_KEY": str(pki.key)}))
    with pytest.raises(ConfigError, match="SOKETI_SSL_CA"):
        server_ssl_context(load_config(environ=tls_env(pki, SOKETI_SSL_CA="/nonexistent/ca.pem")))
    with pytest.raises(ConfigError, match="SOKETI_SSL_PASS"):
        server_ssl_context(load_config(environ={**encrypted, "SOKETI_SSL_PASS": ""}))


async def _established(url: str, ctx: ssl.SSLContext) -> dict[str, Any]:
    async with connect(url, ssl=ctx, open_timeout=WAIT) as ws:
        return dict(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))


async def test_in_process_tls_server_hands_upgrades_to_its_websocket_layer(pki: Pki) -> None:
    """Runs on asyncio and on uvloop: the front door's hand-off works on both TLS transports."""
    from soketi_impl.server import Server

    server = Server(load_config(environ={**base_env(0), **tls_env(pki)}))
    await server.start()
    try:
        assert server.scheme == "wss"
        ctx = client_context(pki)
        async with connect(wss_url(server.port), ssl=ctx, open_timeout=WAIT) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT))["event"] == "pusher:connection_established"
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "big"}}))
            await asyncio.wait_for(ws.recv(), WAIT)
            # a message larger than one TLS record (16 KiB) goes through the raw fan-out path
            await server.pusher.trigger(APP_ID, ["big"], "blob", "x" * 50_000)
            message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert (message["event"], message["data"]) == ("blob", "x" * 50_000)
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"https://127.0.0.1:{server.port}/ready", ssl=ctx) as resp:
                assert (resp.status, await resp.text()) == (200, "OK")
    finally:
        await server.stop(0)


async def test_ssl_ca_verifies_client_certificates_that_are_sent(pki: Pki) -> None:
    """As soketi's uWebSockets with a CA file: a client certificate is asked for and
    checked; a client without one still connects."""
    from soketi_impl.server import Server

    server = Server(load_config(environ={**base_env(0), **tls_env(pki, SOKETI_SSL_CA=str(pki.ca))}))
    await server.start()
    try:
        url = wss_url(server.port)
        assert (await _established(url, client_context(pki)))["event"] == "pusher:connection_established"
        signed = client_context(pki, pki.client_cert, pki.client_key)
        assert (await _established(url, signed))["event"] == "pusher:connection_established"
        stranger = client_context(pki, pki.stranger_cert, pki.stranger_key)
        with pytest.raises(REFUSED):  # closed at the TLS layer: no HTTP answer at all
            await _established(url, stranger)
    finally:
        await server.stop(0)
