"""Facts of the protocol that the Rust core defines and Python uses: the two agree."""

from __future__ import annotations

import inspect
import math
import re

import pytest

import platforms
import rframe
from rframe import _errors, _files, _protocol, _rframe
from rframe._rframe import ERROR_CODES

CODES = {code for code, _ in ERROR_CODES}


def test_error_codes_are_unique_names_with_a_closing_flag():
    assert len(CODES) == len(ERROR_CODES) > 0
    assert all(isinstance(code, str) and re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in CODES)
    assert all(isinstance(closes, bool) for _, closes in ERROR_CODES)


def test_python_maps_only_codes_the_server_knows():
    assert set(_errors.REMOTE_ERRORS) <= CODES
    assert _protocol.CLOSING_CODES <= CODES
    assert _errors.AuthenticationError.code in CODES


def test_the_closing_codes_are_those_rust_says_close():
    assert _protocol.CLOSING_CODES == {code for code, closes in ERROR_CODES if closes}
    assert {"auth", "busy", "too-large", "timeout", "tls-required"} == _protocol.CLOSING_CODES


@pytest.mark.parametrize(("code", "closes"), ERROR_CODES)
def test_a_client_closes_after_exactly_the_closing_codes(code, closes):
    # Both clients drive the session: it says whether an error closes.
    session = _rframe.ClientSession()
    id, _ = session.request(b"x")
    events = session.feed(rframe.pack_frame(b"", op="error", error=code, message="m"))
    assert events[0][:5] == ("remote-error", id, code, "m", closes)
    with pytest.raises(rframe.RemoteError if code != "auth" else rframe.AuthenticationError):
        raise _protocol.event_failure(events[0])
    if closes:
        assert events[1:] == [("closed", "the server refused: m", None)] and session.closed
    else:
        assert events[1:] == [] and session.closed is None


def test_remote_error_names_every_code_it_is_raised_for():
    # Its docstring lists the codes; "auth" raises AuthenticationError instead.
    listed = set(re.findall(r'``"([a-z-]+)"``', _errors.RemoteError.__doc__.split("``message``")[0]))
    assert listed == CODES - {"auth"}


def test_the_client_only_code_is_not_a_server_code():
    assert "bad-response" not in CODES


@platforms.commands
def test_max_seconds_bounds_the_server_and_the_clients_alike():
    assert _protocol.MAX_SECONDS == _rframe.MAX_SECONDS == 1e9
    over = math.nextafter(_rframe.MAX_SECONDS, math.inf)
    assert _protocol.check_seconds(_rframe.MAX_SECONDS) == _rframe.MAX_SECONDS
    with pytest.raises(ValueError):
        _protocol.check_seconds(over)
    with rframe.Server(port=0, timeout=_rframe.MAX_SECONDS, idle_timeout=_rframe.MAX_SECONDS):
        pass
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        rframe.Server(port=0, timeout=over)


def test_file_facts_are_the_cores():
    assert _files.CHECKSUMS == _rframe.CHECKSUMS == ("blake3", "sha256", "md5")
    assert _files.MODE_BITS == _rframe.MODE_BITS == 0o777
    assert _files.CHUNK == _rframe.TRANSFER_CHUNK == 1 << 20
    assert _files.PART_SUFFIX == _rframe.PART_SUFFIX == ".rframe-part"
    assert _files.WRITEBACK_EVERY == _rframe.WRITEBACK_EVERY == 8 << 20


def test_a_download_in_progress_carries_the_part_suffix(tmp_path):
    local = _files.LocalFile(str(tmp_path / "f"), overwrite=False, checksum="sha256")
    try:
        assert local.temp.endswith(_rframe.PART_SUFFIX)
    finally:
        local.discard()


def test_every_default_port_is_the_cores():
    assert _rframe.DEFAULT_PORT == 8848
    defaults = [inspect.signature(rframe.Server).parameters["port"].default]
    defaults.append(inspect.signature(rframe.Client).parameters["port"].default)
    defaults.append(inspect.signature(rframe.AsyncClient).parameters["port"].default)
    assert defaults == [_rframe.DEFAULT_PORT] * 3


def test_equal_codecs_are_one_codec():
    a, b = rframe.Codec(checksum="md5"), rframe.Codec(checksum="md5")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert rframe.Codec() != rframe.Codec(byteorder="big")
    assert len({rframe.Codec(max_body=n) for n in (1, 2, 3)}) == 3
