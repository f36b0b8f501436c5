"""TLS for the main port: the ``ssl.SSLContext`` that ``SOKETI_SSL_*`` describe.

soketi serves ``wss://`` and ``https://`` on its one port when a certificate is set;
so do we, through the same listening socket (the front door reads the request head
over TLS and hands WebSocket upgrades to its WebSocket layer on the TLS transport). Problems with
the files are :class:`~soketi_impl.errors.ConfigError` naming the variable, found at
start rather than at the first handshake.
"""

from __future__ import annotations

import os
import ssl

from ..errors import ConfigError
from .model import Config

__all__ = ["server_ssl_context"]

_CERT = "SOKETI_SSL_CERT (ssl.certPath)"
_KEY = "SOKETI_SSL_KEY (ssl.keyPath)"
_PASS = "SOKETI_SSL_PASS (ssl.passphrase)"
_CA = "SOKETI_SSL_CA (ssl.caPath)"


def _readable(path: str, label: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(label, "the path of a readable PEM file", path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(label, f"a readable PEM file ({exc.strerror or exc})", path) from None


def _encrypted(path: str) -> bool:
    """Whether a PEM file holds an encrypted private key (PKCS#8 or the legacy header)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read(1 << 20)
    except OSError:
        return False
    return b"BEGIN ENCRYPTED PRIVATE KEY" in text or b"Proc-Type: 4,ENCRYPTED" in text


def server_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, or ``None`` when neither a certificate nor a key is set.

    The certificate file may hold the chain (leaf first); it may also hold the key,
    in which case ``SOKETI_SSL_KEY`` can stay unset. ``SOKETI_SSL_PASS`` decrypts an
    encrypted key. ``SOKETI_SSL_CA``, as in soketi, asks clients for a certificate
    and verifies the ones they present against it; clients without one still connect.
    """
    if not config.tls:
        return None
    if not config.ssl_cert:
        raise ConfigError(_CERT, "the certificate (PEM) that goes with SOKETI_SSL_KEY")
    _readable(config.ssl_cert, _CERT)
    if config.ssl_key:
        _readable(config.ssl_key, _KEY)
    if config.ssl_ca:
        _readable(config.ssl_ca, _CA)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    passphrase = config.ssl_passphrase

    def password() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
        return passphrase.encode() if passphrase else b""

    try:
        context.load_cert_chain(config.ssl_cert, config.ssl_key or None, password=password)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        # OpenSSL reports a wrong passphrase as a generic PEM error: look at the key.
        if _encrypted(config.ssl_key or config.ssl_cert):
            raise ConfigError(_PASS, "the passphrase of the encrypted key", "(wrong or unset)") from None
        label = _KEY if config.ssl_key else _CERT
        raise ConfigError(
            f"{_CERT} / {label}" if label != _CERT else _CERT,
            f"a PEM certificate and its matching private key ({reason})",
        ) from None
    if config.ssl_ca:
        try:
            context.load_verify_locations(cafile=config.ssl_ca)
        except ssl.SSLError as exc:
            raise ConfigError(_CA, f"PEM CA certificates ({exc.reason or exc})") from None
        context.verify_mode = ssl.CERT_OPTIONAL
    # The front door speaks HTTP/1.1 only (WebSocket upgrades included).
    context.set_alpn_protocols(["http/1.1"])
    return context
