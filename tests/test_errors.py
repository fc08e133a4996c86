"""Errors: limits, bad lengths, bad headers, checksums, truncated streams, and refusal after an error."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

import reference as ref
import rframe
from rframe import ChecksumError, Codec, FrameDecoder, FrameError, FrameTooLarge, HeaderError, IncompleteFrame


def prefix(n, byteorder="little"):
    return struct.pack("<i" if byteorder == "little" else ">i", n)


def raw_frame(hb, body=b"", byteorder="little"):
    return prefix(len(hb), byteorder) + hb + body


def header_of_length(n, total_size):
    """JSON header bytes of exactly n bytes that carry total_size."""
    base = len(json.dumps({"p": "", "total_size": total_size}))
    hb = json.dumps({"p": "x" * (n - base), "total_size": total_size}).encode()
    assert len(hb) == n
    return hb


def feed_bytewise_until_error(dec, data):
    """Feed one byte at a time; return how many bytes were fed when the error came, and the error."""
    for i in range(len(data)):
        try:
            dec.feed(data[i : i + 1])
        except FrameError as exc:
            return i + 1, exc
    raise AssertionError("no error raised")


# ---------------------------------------------------------------- classes


def test_error_class_hierarchy():
    assert issubclass(FrameError, ValueError)
    for cls in (HeaderError, FrameTooLarge, IncompleteFrame, ChecksumError):
        assert issubclass(cls, FrameError)
    assert issubclass(IncompleteFrame, EOFError)
    assert not issubclass(HeaderError, EOFError)


def test_error_classes_are_the_ones_in_rframe_errors():
    from rframe import _errors

    for name in ("FrameError", "HeaderError", "FrameTooLarge", "IncompleteFrame", "ChecksumError"):
        assert getattr(rframe, name) is getattr(_errors, name)


# ---------------------------------------------------------------- header length limit


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_header_length_over_max_header_raises_on_the_fourth_length_byte(byteorder):
    dec = FrameDecoder(Codec(max_header=100, byteorder=byteorder))
    fed, exc = feed_bytewise_until_error(dec, prefix(101, byteorder) + b'{"total_size": 0}')
    assert fed == 4
    assert type(exc) is FrameTooLarge
    assert (exc.part, exc.size, exc.limit) == ("header", 101, 100)


def test_header_length_exactly_max_header_is_accepted():
    hb = header_of_length(100, total_size=3)
    (frame,) = FrameDecoder(Codec(max_header=100)).feed(raw_frame(hb, b"abc"))
    assert frame.body == b"abc"


def test_default_max_header_is_64_kib():
    FrameDecoder().feed(prefix(65536))  # accepted: waits for the header
    with pytest.raises(FrameTooLarge) as ei:
        FrameDecoder().feed(prefix(65537))
    assert (ei.value.part, ei.value.size, ei.value.limit) == ("header", 65537, 65536)


# ---------------------------------------------------------------- body length limit


def test_total_size_over_max_body_raises_when_header_completes_before_any_body_byte():
    hb = json.dumps({"total_size": 11}).encode()
    dec = FrameDecoder(Codec(max_body=10))
    fed, exc = feed_bytewise_until_error(dec, raw_frame(hb, b"x" * 11))
    assert fed == 4 + len(hb)
    assert type(exc) is FrameTooLarge
    assert (exc.part, exc.size, exc.limit) == ("body", 11, 10)


def test_total_size_exactly_max_body_is_accepted():
    (frame,) = FrameDecoder(Codec(max_body=10)).feed(ref.pack_frame(b"x" * 10))
    assert frame.body == b"x" * 10


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_length_only_length_over_max_body_raises_on_the_fourth_length_byte(byteorder):
    dec = FrameDecoder(Codec(json_header=False, max_body=10, byteorder=byteorder))
    fed, exc = feed_bytewise_until_error(dec, prefix(11, byteorder) + b"x" * 11)
    assert fed == 4
    assert type(exc) is FrameTooLarge
    assert (exc.part, exc.size, exc.limit) == ("body", 11, 10)


def test_length_only_length_exactly_max_body_is_accepted():
    codec = Codec(json_header=False, max_body=10)
    (frame,) = FrameDecoder(codec).feed(ref.Codec(json_header=False).pack(b"y" * 10))
    assert frame.body == b"y" * 10


@pytest.mark.parametrize("json_header", [True, False])
def test_largest_positive_length_is_rejected_at_once(json_header):
    with pytest.raises(FrameTooLarge) as ei:
        FrameDecoder(Codec(json_header=json_header)).feed(prefix(2**31 - 1))
    assert ei.value.size == 2**31 - 1


def test_total_size_beyond_64_bits_is_frame_too_large():
    with pytest.raises(FrameTooLarge) as ei:
        FrameDecoder().feed(raw_frame(json.dumps({"total_size": 2**70}).encode()))
    assert ei.value.part == "body"


# ---------------------------------------------------------------- bad lengths


@pytest.mark.parametrize("n", [-1, -(2**31), -17])
@pytest.mark.parametrize(
    "config",
    [{}, {"byteorder": "big"}, {"json_header": False}, {"json_header": False, "byteorder": "big"}],
    ids=["json-little", "json-big", "length-little", "length-big"],
)
def test_negative_length_raises_frame_error(config, n):
    byteorder = config.get("byteorder", "little")
    dec = FrameDecoder(Codec(**config))
    fed, exc = feed_bytewise_until_error(dec, prefix(n, byteorder) + b"\x00" * 8)
    assert fed == 4
    assert isinstance(exc, FrameError)


TEXT_PREFIXES = [
    ({}, b"GET "),
    ({}, b"dir\n"),
    ({}, b"POST"),
    ({}, b'{"to'),  # a JSON header sent without its length
    ({"byteorder": "big"}, b"GET "),
    ({"byteorder": "big"}, b"HTTP"),
    ({"json_header": False}, b"GET "),
    ({"json_header": False, "byteorder": "big"}, b"SSH-"),
]


@pytest.mark.parametrize(
    "config,four",
    TEXT_PREFIXES,
    ids=[f"{c.get('json_header', True)}-{c.get('byteorder', 'little')}-{f!r}" for c, f in TEXT_PREFIXES],
)
def test_printable_ascii_length_says_the_peer_sent_text(config, four):
    codec = Codec(**config)
    value = int.from_bytes(four, codec.byteorder, signed=True)
    assert value > (codec.max_header if codec.json_header else codec.max_body)  # invalid for this codec
    with pytest.raises(FrameError) as ei:
        FrameDecoder(codec).feed(four)
    assert "text" in str(ei.value).lower(), str(ei.value)


# ---------------------------------------------------------------- bad headers


BAD_HEADERS = {
    "bad_json": b'{"total_size": }',
    "truncated_json": b'{"total_size": 1',
    "trailing_garbage": b'{"total_size": 0} x',
    "empty": b"",
    "invalid_utf8": b'{"a": "\xff\xfe", "total_size": 0}',
    "array": b"[]",
    "string": b'"x"',
    "number": b"1",
    "null": b"null",
    "missing_total_size": b'{"a": 1}',
    "float_total_size": b'{"total_size": 1.5}',
    "string_total_size": b'{"total_size": "5"}',
    "bool_total_size": b'{"total_size": true}',
    "null_total_size": b'{"total_size": null}',
    "list_total_size": b'{"total_size": [5]}',
    "nan_total_size": b'{"total_size": NaN}',
    "negative_total_size": b'{"total_size": -1}',
}


@pytest.mark.parametrize("hb", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_header_raises_header_error_when_header_completes(hb):
    dec = FrameDecoder()
    if hb:
        assert dec.feed(prefix(len(hb)) + hb[:-1]) == []
    with pytest.raises(HeaderError):
        dec.feed(hb[-1:] if hb else prefix(0))


# ---------------------------------------------------------------- refusal after an error


def _checksum_mismatch():
    data = bytearray(ref.Codec(checksum="md5").pack(b"payload"))
    data[-1] ^= 0x01
    return bytes(data)


AFTER_ERROR = {
    "header_too_large": ({}, prefix(70000), FrameTooLarge),
    "body_too_large": ({"max_body": 10}, raw_frame(b'{"total_size": 11}'), FrameTooLarge),
    "length_only_too_large": ({"json_header": False, "max_body": 10}, prefix(11), FrameTooLarge),
    "negative_length": ({}, prefix(-1), FrameError),
    "text_prefix": ({}, b"GET ", FrameError),
    "bad_json": ({}, raw_frame(b"{nope}"), HeaderError),
    "not_an_object": ({}, raw_frame(b"[]"), HeaderError),
    "checksum_mismatch": ({"checksum": "md5"}, _checksum_mismatch(), ChecksumError),
}


@pytest.mark.parametrize("config,bad,error", AFTER_ERROR.values(), ids=AFTER_ERROR.keys())
def test_decoder_refuses_further_input_after_an_error(config, bad, error):
    dec = FrameDecoder(Codec(**config))
    with pytest.raises(error) as first:
        dec.feed(bad)
    valid = ref.Codec(json_header=config.get("json_header", True), checksum=config.get("checksum")).pack(b"ok")
    for _ in range(2):
        with pytest.raises(FrameError) as again:
            dec.feed(valid)
        assert type(again.value) is type(first.value)


@pytest.mark.parametrize("config,bad,error", AFTER_ERROR.values(), ids=AFTER_ERROR.keys())
def test_decoder_pending_after_an_error_is_what_followed_the_refused_part(config, bad, error):
    """A refused length, header or frame leaves the buffer; what came after it stays pending."""
    after = b"\x01\x02\x03"
    dec = FrameDecoder(Codec(**config))
    with pytest.raises(error):
        dec.feed(bad + after)
    assert dec.pending == len(after)


# ---------------------------------------------------------------- truncated streams


def _assert_incomplete(exc, part, expected, received):
    assert isinstance(exc, IncompleteFrame) and isinstance(exc, EOFError)
    assert (exc.part, exc.expected, exc.received) == (part, expected, received)
    message = str(exc)
    assert str(expected) in message and str(received) in message, message


def test_close_on_empty_decoder_returns_none():
    assert FrameDecoder().close() is None


def test_close_after_complete_frames_returns_none():
    dec = FrameDecoder()
    assert len(dec.feed(ref.pack_frame(b"a") + ref.pack_frame(b"b"))) == 2
    assert dec.close() is None


@pytest.mark.parametrize("json_header", [True, False])
def test_close_mid_length_raises_incomplete_frame(json_header):
    dec = FrameDecoder(Codec(json_header=json_header))
    dec.feed(b"\x05\x00")
    with pytest.raises(IncompleteFrame) as ei:
        dec.close()
    _assert_incomplete(ei.value, "length", 4, 2)


def test_close_mid_header_raises_incomplete_frame():
    hb = ref.Codec().header_bytes(b"body", {"file_name": "a.txt"})
    dec = FrameDecoder()
    dec.feed(prefix(len(hb)) + hb[:3])
    with pytest.raises(IncompleteFrame) as ei:
        dec.close()
    _assert_incomplete(ei.value, "header", len(hb), 3)


@pytest.mark.parametrize("received", [0, 1, 6])
def test_close_mid_body_raises_incomplete_frame(received):
    body = b"0123456"
    data = ref.pack_frame(body)
    dec = FrameDecoder()
    dec.feed(data[: len(data) - len(body) + received])
    with pytest.raises(IncompleteFrame) as ei:
        dec.close()
    _assert_incomplete(ei.value, "body", len(body), received)


def test_close_mid_body_length_only_raises_incomplete_frame():
    dec = FrameDecoder(Codec(json_header=False))
    dec.feed(ref.Codec(json_header=False).pack(b"x" * 1000)[:504])
    with pytest.raises(IncompleteFrame) as ei:
        dec.close()
    _assert_incomplete(ei.value, "body", 1000, 500)


def test_close_after_a_whole_frame_and_part_of_the_next_reports_the_next():
    dec = FrameDecoder()
    assert len(dec.feed(ref.pack_frame(b"first") + ref.pack_frame(b"second")[:2])) == 1
    with pytest.raises(IncompleteFrame) as ei:
        dec.close()
    _assert_incomplete(ei.value, "length", 4, 2)


# ---------------------------------------------------------------- checksums


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_checksum_codec_adds_the_real_hex_digest(algorithm):
    body = b"some body \x00\xff"
    data = Codec(checksum=algorithm).pack(body, {"a": 1})
    n = int.from_bytes(data[:4], "little")
    header = json.loads(data[4 : 4 + n])
    assert header[algorithm] == hashlib.new(algorithm, body).hexdigest()
    assert data == ref.Codec(checksum=algorithm).pack(body, {"a": 1})


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_checksum_codec_decodes_an_intact_frame(algorithm):
    data = ref.Codec(checksum=algorithm).pack(b"intact", {"a": 1})
    (frame,) = FrameDecoder(Codec(checksum=algorithm)).feed(data)
    assert frame.body == b"intact"
    assert frame.header[algorithm] == hashlib.new(algorithm, b"intact").hexdigest()


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_checksum_mismatch_raises_checksum_error(algorithm):
    body = b"original body"
    data = bytearray(ref.Codec(checksum=algorithm).pack(body))
    data[-3] ^= 0x20  # alter one body byte
    altered = bytes(data[-len(body) :])
    with pytest.raises(ChecksumError) as ei:
        FrameDecoder(Codec(checksum=algorithm)).feed(bytes(data))
    exc = ei.value
    assert exc.algorithm == algorithm
    assert exc.expected == hashlib.new(algorithm, body).hexdigest()
    assert exc.actual == hashlib.new(algorithm, altered).hexdigest()


def test_checksum_missing_from_header_raises_checksum_error():
    with pytest.raises(ChecksumError) as ei:
        FrameDecoder(Codec(checksum="sha256")).feed(ref.pack_frame(b"abc", {"md5": "x"}))
    assert ei.value.expected is None
    assert ei.value.actual == hashlib.sha256(b"abc").hexdigest()


def test_default_codec_does_not_verify_checksums():
    data = ref.pack_frame(b"abc", {"md5": "not-a-digest", "sha256": 12})
    (frame,) = FrameDecoder().feed(data)
    assert frame.header["md5"] == "not-a-digest" and frame.body == b"abc"


# ---------------------------------------------------------------- encoder limits


@pytest.mark.parametrize("json_header", [True, False])
def test_pack_refuses_body_over_max_body(json_header):
    codec = Codec(json_header=json_header, max_body=10)
    assert codec.pack(b"x" * 10) == ref.Codec(json_header=json_header).pack(b"x" * 10)
    with pytest.raises(FrameTooLarge) as ei:
        codec.pack(b"x" * 11)
    assert (ei.value.part, ei.value.size, ei.value.limit) == ("body", 11, 10)


def test_pack_refuses_str_body_whose_utf8_is_over_max_body():
    with pytest.raises(FrameTooLarge) as ei:
        Codec(max_body=10).pack("é" * 6)  # 6 characters, 12 bytes
    assert ei.value.size == 12


def test_pack_refuses_header_over_max_header():
    header = {"file_name": "x" * 40}
    n = len(ref.Codec().header_bytes(b"", header))
    assert Codec(max_header=n).pack(b"", header) == ref.pack_frame(b"", header)
    with pytest.raises(FrameTooLarge) as ei:
        Codec(max_header=n - 1).pack(b"", header)
    assert (ei.value.part, ei.value.size, ei.value.limit) == ("header", n, n - 1)
