"""TLS for the clients: when to use it, the context, the pin, and the channel
binding of the token handshake (see PROTOCOL.md, "TLS").

Both clients use the standard library's :mod:`ssl` (the asyncio one through
the event loop's ``ssl=``); what they decide and check is here, once.

>>> normalize_fingerprint("SHA256:" + "AB:" * 31 + "AB") == "ab" * 32
True
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
import ssl

from ._errors import FingerprintMismatch
from ._rframe import TLS_ALPN as ALPN  # the application protocol both ends name in the handshake

__all__ = [
    "ALPN",
    "TLSArg",
    "normalize_fingerprint",
    "is_loopback_host",
    "uses_tls",
    "check_loopback_peer",
    "client_context",
    "pinning_context",
    "PeerCertificate",
    "ClientTLS",
    "new_token",
]


def new_token() -> str:
    """A new random token: 32 bytes from the OS, base64url (43 characters),
    as long as a server reachable from the network requires.

    >>> token = new_token()
    >>> len(token), token == new_token()
    (43, False)
    """
    return secrets.token_urlsafe(32)


TLSArg = bool | ssl.SSLContext | None

_HEX = frozenset("0123456789abcdef")


def normalize_fingerprint(fingerprint: str) -> str:
    """A certificate fingerprint as 64 lowercase hex digits: any case, colons
    and a ``sha256:`` prefix are accepted; anything else is a ``ValueError``."""
    if not isinstance(fingerprint, str):
        raise TypeError(f"fingerprint must be a str, not {type(fingerprint).__name__}")
    text = fingerprint.strip()
    if text[:7].lower() == "sha256:":
        text = text[7:]
    digits = text.replace(":", "").lower()
    if len(digits) != 64 or not _HEX.issuperset(digits):
        raise ValueError(
            f"not a SHA-256 fingerprint: {fingerprint!r} "
            "(64 hex digits, as python -m rframe.server --fingerprint prints)"
        )
    return digits


def is_loopback_host(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1) or ``localhost``: what
    a client decides plaintext by before it connects (and checks after, see
    :func:`check_loopback_peer`). Other names, ``*.localhost`` among them,
    may be looked up on the network, so they get TLS."""
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def uses_tls(tls: bool | None, host: str | None, fingerprint: str | None = None) -> bool:
    """Whether a client connects with TLS: as told, else with a pin, or to
    any host that is not loopback (``host=None``: a Unix socket)."""
    if tls is not None:
        return tls
    return fingerprint is not None or (host is not None and not is_loopback_host(host))


def check_loopback_peer(sock: socket.socket, host: str) -> None:
    """After a plaintext connection chosen because ``host`` looked local: the
    address it reached must be loopback too, or the client closes and says so
    (a name that resolved elsewhere would get the token's proof in the clear)."""
    address = ipaddress.ip_address(sock.getpeername()[0].split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_loopback:
        raise ConnectionRefusedError(
            f"{host} reached {address}, which is not a loopback address: refusing plaintext there "
            "(tls=True to connect over TLS)"
        )


def pinning_context() -> ssl.SSLContext:
    """TLS 1.3, ALPN ``rframe/1``, and no CA verification: the peer is judged
    by its fingerprint or by the token's channel binding instead (a
    self-signed certificate has no CA to verify it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([ALPN])
    return ctx


def client_context(
    tls: TLSArg, *, host: str | None, fingerprint: str | None, token: bytes | None
) -> ssl.SSLContext | None:
    """The context a client connects with, or ``None`` for plaintext.

    ``tls=None`` is TLS to any host that is not loopback (``host=None``: a
    Unix socket, plaintext); ``True``/``False`` force it; an
    :class:`ssl.SSLContext` is used as given. TLS needs something that says
    whom the client talks to: a token (bound to the channel), a fingerprint,
    or a context of the caller's, which verifies as the caller chose.
    """
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is not None and not isinstance(tls, bool):
        raise TypeError(f"tls must be None, True, False or an ssl.SSLContext, not {type(tls).__name__}")
    use_tls = uses_tls(tls, host, fingerprint)
    if not use_tls:
        if fingerprint is not None:
            raise ValueError(
                "fingerprint pins a TLS certificate: it needs TLS (tls=False was given, or a local address)"
            )
        return None
    if fingerprint is None and token is None:
        where = "" if tls else f" ({host} is not a loopback address, so TLS is on)"
        raise ValueError(
            f"TLS needs something that says whom you talk to{where}: a token (the handshake is bound to the "
            "TLS channel), fingerprint=... (python -m rframe.server --fingerprint prints it), or an "
            "ssl.SSLContext that verifies the certificate; tls=False for a plaintext server"
        )
    return pinning_context()


class PeerCertificate:
    """The certificate a TLS connection presented: its fingerprint (what
    users pin) and the channel binding the token handshake covers
    (``tls-server-end-point``: the SHA-256 of its DER bytes)."""

    __slots__ = ("fingerprint", "binding")

    def __init__(self, der: bytes) -> None:
        digest = hashlib.sha256(der)
        self.binding = digest.digest()
        self.fingerprint = digest.hexdigest()

    @classmethod
    def of(cls, ssl_object: ssl.SSLSocket | ssl.SSLObject, server: str, pinned: str | None) -> PeerCertificate:
        """The peer's certificate, checked against the pin (``pinned``, as
        :func:`normalize_fingerprint` returns it): :class:`FingerprintMismatch`
        if it differs, before anything is sent."""
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            raise ssl.SSLError(f"{server} presented no certificate")
        cert = cls(der)
        if pinned is not None and cert.fingerprint != pinned:
            raise FingerprintMismatch(server, pinned, cert.fingerprint)
        return cert


class ClientTLS:
    """What a client decided about TLS, and the checks it makes once its
    socket is connected; both clients drive one.

    ``host`` is ``None`` for a Unix socket. ``context`` is the
    :class:`ssl.SSLContext` to connect with, ``None`` for plaintext.
    """

    __slots__ = ("context", "pinned", "host", "_check_loopback")

    def __init__(self, tls: TLSArg, *, host: str | None, fingerprint: str | None, token: bytes | None) -> None:
        self.pinned = normalize_fingerprint(fingerprint) if fingerprint is not None else None
        self.context = client_context(tls, host=host, fingerprint=self.pinned, token=token)
        self.host = host
        # Plaintext chosen by the name alone is checked against the address reached.
        self._check_loopback = tls is None and self.context is None and host is not None

    @property
    def server_hostname(self) -> str:
        """The name the TLS handshake gives (SNI; ``""`` on a Unix socket)."""
        return self.host if self.host is not None else ""

    def check_plaintext(self, sock: socket.socket) -> None:
        """Once connected: if plaintext was chosen by the name alone, the
        address reached must be loopback (see :func:`check_loopback_peer`)."""
        if self._check_loopback:
            assert self.host is not None
            check_loopback_peer(sock, self.host)

    def check_peer(self, ssl_object: ssl.SSLSocket | ssl.SSLObject, server: str) -> PeerCertificate:
        """After the TLS handshake, before anything is sent: the peer's
        certificate, checked against the pin (see :meth:`PeerCertificate.of`)."""
        return PeerCertificate.of(ssl_object, server, self.pinned)
