"""Type stubs for the compiled core of rframe (``rframe._rframe``)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, final, overload

from _typeshed import WriteableBuffer

# The classes are final: the compiled types cannot be subclassed. Their
# constructors are ``__new__`` (PyO3's ``#[new]``), as stubtest sees them.

__all__ = [
    "ClientSession",
    "Codec",
    "Frame",
    "TLS_ALPN",
    "CHANNEL_BINDING_TLS",
    "CHANNEL_BINDING_NONE",
    "ERROR_CODES",
    "MAX_SECONDS",
    "DEFAULT_PORT",
    "TRANSFER_CHUNK",
    "CHECKSUMS",
    "SIGNALS",
    "DEFAULT_TERM",
    "DEFAULT_TERMINAL_SIZE",
    "STDIN_CHUNK",
    "PART_SUFFIX",
    "WRITEBACK_EVERY",
    "MODE_BITS",
    "TREE_DEPTH",
    "FrameDecoder",
    "Server",
    "_SessionReader",
    "_PartFile",
    "_Hasher",
    "pack_frame",
    "read_frame",
    "send_frame",
    "signal_name",
    "auth_nonce",
    "auth_proof",
    "auth_verify",
    "server_fingerprint",
    "check_link_target",
    "sync_path",
    "_stop_python_threads",
]

_Body = bytes | bytearray | memoryview | str
_Header = Mapping[Any, Any] | None

@final
class Codec:
    """How frames are laid out on the wire, and the limits a reader enforces.

    >>> codec = Codec(json_header=False, byteorder="big")   # Twisted / tokio-util / Netty
    >>> codec.pack(b"hi")
    b'\\x00\\x00\\x00\\x02hi'
    """

    def __new__(
        cls,
        *,
        json_header: bool = True,
        byteorder: Literal["little", "big"] = "little",
        # Defaults 65536 and 268435456 (256 MiB): constants in Rust, which the
        # compiled signature shows as `...`, and so does the stub (stubtest).
        max_header: int = ...,
        max_body: int = ...,
        checksum: Literal["md5", "sha256", "blake3"] | None = None,
    ) -> Codec: ...
    @property
    def json_header(self) -> bool: ...
    @property
    def byteorder(self) -> str: ...
    @property
    def max_header(self) -> int: ...
    @property
    def max_body(self) -> int: ...
    @property
    def checksum(self) -> str | None: ...
    def pack(self, body: _Body | None = None, header: _Header = None, **fields: Any) -> bytes: ...
    def read(self, source: Any) -> Frame: ...
    def send(self, sock: Any, body: _Body | None = None, header: _Header = None, **fields: Any) -> None: ...
    def decoder(self) -> FrameDecoder: ...

@final
class Frame:
    """One decoded frame: a header dict and a body.

    >>> header, body = Frame({"total_size": 2}, b"hi")
    """

    def __new__(
        cls, header: dict[str, Any] | None = None, body: bytes | bytearray | memoryview | None = None
    ) -> Frame: ...
    @property
    def header(self) -> dict[str, Any]: ...
    @property
    def body(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: Literal[0], /) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: Literal[1], /) -> bytes: ...
    @overload
    def __getitem__(self, index: int, /) -> Any: ...
    def __eq__(self, other: object, /) -> bool: ...

@final
class FrameDecoder:
    """Turns arbitrarily split chunks of a byte stream back into frames (sans-IO).

    >>> dec = FrameDecoder()
    >>> data = pack_frame(b"one") + pack_frame(b"two")
    >>> [f.body for f in dec.feed(data[:5]) + dec.feed(data[5:])]
    [b'one', b'two']
    """

    def __new__(cls, codec: Codec | None = None) -> FrameDecoder: ...
    @property
    def codec(self) -> Codec: ...
    @property
    def pending(self) -> int: ...
    @property
    def needed(self) -> int: ...
    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]: ...
    def close(self) -> None: ...

def pack_frame(body: _Body | None = None, header: _Header = None, **fields: Any) -> bytes: ...
def read_frame(source: Any) -> Frame: ...
def send_frame(sock: Any, body: _Body | None = None, header: _Header = None, **fields: Any) -> None: ...

_Handler = Callable[[Frame], bytes | bytearray | memoryview | str | tuple[Mapping[str, Any] | None, _Body] | Frame]

@final
class Server:
    """A tokio command server (or, with ``handler``, a server for your own protocol).

    Binds at construction (``port=0`` picks a free port, see ``address``);
    ``start()`` serves in the background, ``serve_forever()`` in the foreground.
    Binding a non-loopback host needs a token of 32 or more bytes
    (:func:`rframe.new_token` makes one) and serves TLS 1.3; without them it
    raises ``ValueError``, unless ``insecure=True`` (no token needed, and
    plaintext unless ``tls=True``; each warns with ``RuntimeWarning``).
    ``tls=None`` decides by the address (on off loopback), ``True`` turns it
    on anywhere, ``False`` off (off loopback only with ``insecure=True``). A
    ``tls_cert``, ``tls_key`` or ``tls_dir`` given with ``tls=None`` mean TLS. A
    TLS server still serves plaintext on the same port to clients on this
    machine; others get a ``tls-required`` error. Its certificate is made on
    first use and kept in ``tls_dir`` (default: ``$XDG_STATE_HOME/rframe``,
    else ``~/.local/state/rframe``), or read from ``tls_cert`` and
    ``tls_key`` (PEM). Logs through
    ``logging.getLogger("rframe.server")``: one INFO line per command.
    With ``root`` (a directory) it also serves files beneath it to
    ``Client.upload``, ``Client.download`` and ``Client.list_files``; names
    cannot lead out of it, whether by ``..``, an absolute path or a symlink.
    ``timeout`` is the longest a ``Client.run`` command may run;
    ``live_timeout`` a ``Client.start`` one's (``None``: no limit, it runs
    as long as its client stays connected, as over ssh). A request may ask
    for less.
    ``max_output`` bounds the stdout and the stderr one command keeps;
    ``output_budget`` bounds the output all commands hold in memory at once,
    and past it output is dropped and flagged truncated as well.
    With a token, connections that have not authenticated yet are capped as
    sshd's ``MaxStartups`` caps them: ``max_startups=(start, rate, full)``
    (``None``: ``(64, 30, 256)``; an int N: none past N) and
    ``max_startups_per_source`` from one address; one over is closed at once.

    >>> with Server(port=0) as server:
    ...     with Client(*server.address) as client:
    ...         client.run("echo hi").stdout
    b'hi\\n'
    """

    def __new__(
        cls,
        host: str = "127.0.0.1",
        port: int = 8848,
        *,
        unix_path: str | PathLike[str] | None = None,
        handler: _Handler | None = None,
        token: str | bytes | None = None,
        codec: Codec | None = None,
        timeout: float = 30.0,
        live_timeout: float | None = None,
        max_output: int = 16777216,
        max_connections: int = 1024,
        allow: Sequence[str] | None = None,
        shell: bool = True,
        cwd: str | PathLike[str] | None = None,
        root: str | PathLike[str] | None = None,
        pty: bool = True,
        allow_pty: bool = False,
        insecure: bool = False,
        header_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        encoding: str = "utf-8",
        tls: bool | None = None,
        tls_cert: str | PathLike[str] | None = None,
        tls_key: str | PathLike[str] | None = None,
        tls_dir: str | PathLike[str] | None = None,
        output_budget: int = 268435456,
        max_startups: int | tuple[int, int, int] | None = None,
        max_startups_per_source: int = 16,
    ) -> Server: ...
    @property
    def tls_fingerprint(self) -> str | None:
        """The lowercase hex SHA-256 of the TLS certificate's DER bytes (what clients pin), ``None`` without TLS."""
    @property
    def address(self) -> tuple[str, int] | str:
        """``(host, port)`` for TCP, the socket's path for a Unix socket."""
    def start(self) -> None:
        """Serve in the background and return at once."""
    def stop(self) -> None:
        """Stop serving (running commands are killed); waits up to 5 s for connections to end."""
    def serve_forever(self) -> None:
        """Serve until ``stop()``; Ctrl-C (or an exception from a signal handler) stops the server and is re-raised."""
    def __enter__(self) -> Server: ...
    def __exit__(self, *exc: object) -> None: ...

@final
class _PartFile:
    """A file being received at a local path: a locked temporary file beside it, renamed into place by ``commit``."""
    def __new__(cls, path: str | PathLike[str], overwrite: bool, resume: bool = False) -> _PartFile: ...
    @property
    def temp(self) -> bytes: ...
    @property
    def kept(self) -> int: ...
    @property
    def recorded(self) -> tuple[int, int] | None: ...
    def restart(self, size: int, mtime_ns: int) -> None: ...
    def release(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def commit(self, durable: bool = True) -> None: ...
    def discard(self) -> None: ...

@final
class _Hasher:
    """A digest computed piece by piece (``hashlib``'s shape), for the checksums ``hashlib`` lacks."""
    def __new__(cls, checksum: str) -> _Hasher: ...
    @property
    def name(self) -> str: ...
    def update(self, data: _Body) -> None: ...
    def hexdigest(self) -> str: ...

_Id = int

#: The events of ``ClientSession.next_event``, told apart by their first item.
_SessionEvent = (
    tuple[Literal["reply"], _Id, Frame]
    | tuple[Literal["unsolicited"], Frame]
    | tuple[Literal["remote-error"], _Id | None, str, str, bool, dict[str, Any] | None]
    | tuple[Literal["send"], bytes]
    | tuple[Literal["logged-in"], _Id]
    | tuple[Literal["login-failed"], _Id, str]
    | tuple[Literal["upload-ready"], _Id, int, int, str | None]
    | tuple[Literal["download-started"], _Id, int, int, int | None]
    | tuple[Literal["file-chunk"], _Id, bytes]
    | tuple[Literal["transfer-end"], _Id, str | None, int, str | None, str | None, dict[str, Any] | None]
    | tuple[
        Literal["violation"],
        _Id | None,
        Literal[
            "unexpected-reply", "no-size", "download-data", "short-download", "stored-else", "upload-data", "bad-offset"
        ],
        str,
        bool,
        dict[str, Any] | None,
    ]
    | tuple[Literal["features"], _Id, list[str]]
    | tuple[Literal["closed"], str, Exception | None]
)

@final
class ClientSession:
    """The client side of the command protocol without I/O: request methods
    return ``(id, bytes)`` to send; ``feed``/``next_event`` turn the server's
    bytes into events (see ``_SessionEvent``)."""
    def __new__(
        cls, codec: Codec | None = None, *, token: bytes | None = None, binding: bytes | None = None
    ) -> ClientSession: ...
    @property
    def closed(self) -> str | None: ...
    @property
    def logged_in(self) -> bool: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def uploading(self) -> bool: ...
    @property
    def default_checksum(self) -> str | None: ...
    def features(self) -> tuple[_Id, bytes]: ...
    def request(
        self, body: _Body | None = None, header: Mapping[str, Any] | None = None, **fields: Any
    ) -> tuple[_Id, bytes]: ...
    def run(self, header: Mapping[str, Any], body: _Body | None = None) -> tuple[_Id, bytes]: ...
    def send(self, body: _Body | None = None, header: Mapping[str, Any] | None = None, **fields: Any) -> bytes: ...
    def expect_reply(self) -> _Id: ...
    def bind_channel(self, binding: bytes) -> None:
        """On TLS, the SHA-256 of the server certificate, for a session made before the handshake ended."""
    def login(self) -> tuple[_Id, bytes]: ...
    def list(
        self, name: str = "", *, recursive: bool = False, checksum: str | None = None, after: str | None = None
    ) -> tuple[_Id, bytes]: ...
    def put(
        self,
        name: str,
        size: int,
        *,
        overwrite: bool = False,
        checksum: str = "sha256",
        mode: int | None = None,
        sync: bool = True,
        resume_mtime_ns: int | None = None,
    ) -> tuple[_Id, bytes]: ...
    def put_resume(self, own_digest: str) -> int: ...
    def put_inline(
        self,
        name: str,
        data: _Body,
        digest: str,
        *,
        overwrite: bool = False,
        checksum: str = "sha256",
        mode: int | None = None,
        sync: bool = True,
    ) -> tuple[_Id, bytes]: ...
    def mkdir(self, name: str, *, mode: int | None = None) -> tuple[_Id, bytes]: ...
    def symlink(self, name: str, target: str, *, overwrite: bool = False) -> tuple[_Id, bytes]: ...
    def sync(self) -> tuple[_Id, bytes]: ...
    def put_data(self, chunk: _Body) -> bytes: ...
    def put_end(self, digest: str) -> bytes: ...
    def get(
        self, name: str, *, checksum: str = "sha256", resume: tuple[int, str, int, int] | None = None
    ) -> tuple[_Id, bytes]: ...
    def start(self, header: Mapping[str, Any]) -> tuple[_Id, bytes]: ...
    @property
    def live(self) -> _Id | None: ...
    def stdin(self, data: _Body, eof: bool = False) -> bytes: ...
    def signal(self, name: str) -> bytes: ...
    def resize(self, columns: int, lines: int) -> bytes: ...
    def cancel(self, id: _Id) -> str | None:
        """``None`` if the connection goes on (the reply is dropped), else why it must close."""
    def abort(self, reason: str) -> None: ...
    def receive_data(self, data: _Body) -> None: ...
    @overload
    def read_event(self, sock: Any, *, untimed: bool = False, into: None = None, want: None = None) -> _SessionEvent:
        """The next event, reading whole frames from ``sock`` as ``read_frame`` does
        (``untimed``: whatever the socket's timeout)."""
    @overload
    def read_event(
        self, sock: Any, *, untimed: bool = False, into: WriteableBuffer, want: tuple[int, int]
    ) -> _SessionEvent | int:
        """As above; output of stream ``want`` (``(id, fd)``) that fits goes into ``into``: its length."""
    def send_data(self, sock: Any, chunk: _Body) -> None:
        """The upload's next ``data`` frame, sent to ``sock`` from ``chunk``'s own buffer."""
    def receive_eof(self) -> None: ...
    def next_event(self) -> _SessionEvent | None: ...
    def feed(self, data: _Body) -> builtins.list[_SessionEvent]: ...

@final
class _SessionReader:
    """AsyncClient's read side: what the event loop read into this thread's read buffer, through a session."""
    def __new__(cls, session: ClientSession) -> _SessionReader: ...
    def get_buffer(self, sizehint: int, /) -> memoryview:
        """``BufferedProtocol.get_buffer``: a view of the calling thread's read buffer."""
    def deliver(self, nbytes: int, waiters: dict[_Id, asyncio.Future[Any]], /) -> builtins.list[_SessionEvent] | None:
        """The read to the session; replies resolve ``waiters[id]``; the events left, in order, or ``None``."""
    def receive_eof(self) -> builtins.list[_SessionEvent]:
        """The server's stream ended: the events that makes (the last is ``closed``)."""

#: The application protocol TLS connections name (ALPN).
TLS_ALPN: str
#: The handshake's ``channel_binding`` on TLS, and on plaintext (PROTOCOL.md).
CHANNEL_BINDING_TLS: str
CHANNEL_BINDING_NONE: str
#: Every error code of PROTOCOL.md and whether the server closes the connection after it.
ERROR_CODES: tuple[tuple[str, bool], ...]
#: The longest time limit in seconds that the server and the clients take.
MAX_SECONDS: float
#: The port a server listens on unless told otherwise.
DEFAULT_PORT: int
#: The largest ``data`` frame body of a file transfer.
TRANSFER_CHUNK: int
#: The checksums a file transfer may name, the fastest first.
CHECKSUMS: tuple[str, ...]
#: The signals a live command may be sent, by name (PROTOCOL.md, ``signal``).
SIGNALS: tuple[str, ...]
#: A live command's terminal's TERM when ``start(..., pty=True)`` gets no ``term`` and the client has no ``$TERM``.
DEFAULT_TERM: str
#: Its window size (columns, lines) when neither ``size`` nor the client's terminal gives one.
DEFAULT_TERMINAL_SIZE: tuple[int, int]
#: The most stdin bytes one ``stdin`` frame carries.
STDIN_CHUNK: int
#: The suffix of the temporary name of a file being received.
PART_SUFFIX: str
#: Every this many bytes, a file being received is handed to the disk.
WRITEBACK_EVERY: int
#: The permission bits a file or directory keeps when sent (no setuid, setgid or sticky bit).
MODE_BITS: int
#: The deepest a directory tree goes, in levels beneath its top: deeper ones are not listed.
TREE_DEPTH: int

def sync_path(path: str | PathLike[str]) -> None:
    """Make durable what was saved beneath ``path`` with ``_PartFile.commit(durable=False)`` (``syncfs`` on Linux)."""

def check_link_target(name: str, target: str) -> None:
    """Raise ``ValueError`` if a symlink at ``name`` to ``target`` leads out of its tree."""

def signal_name(name: str) -> str:
    """A signal as the protocol names it (``"INT"`` for ``"SIGINT"`` or
    ``"int"``); ``ValueError`` for one a live command may not be sent."""

def auth_nonce() -> str:
    """32 random bytes from the OS, as hex: a handshake nonce."""

def auth_proof(
    token: bytes,
    role: Literal["client", "server"],
    server_nonce: str,
    client_nonce: str,
    *,
    binding: bytes | None = None,
) -> str:
    """The hex HMAC-SHA256 proof that ``role`` holds ``token`` (see PROTOCOL.md); ``binding``:
    the SHA-256 of the server's certificate on TLS."""

def auth_verify(
    token: bytes,
    role: Literal["client", "server"],
    server_nonce: str,
    client_nonce: str,
    proof: str,
    *,
    binding: bytes | None = None,
) -> bool:
    """Checks a proof in constant time."""

def _stop_python_threads() -> None:
    """Stops rframe's Python threads (registered with ``atexit`` by the module)."""

def server_fingerprint(
    *,
    tls_cert: str | PathLike[str] | None = None,
    tls_key: str | PathLike[str] | None = None,
    tls_dir: str | PathLike[str] | None = None,
) -> str:
    """The fingerprint of the certificate a server with these arguments uses (made and kept first, if generated)."""
