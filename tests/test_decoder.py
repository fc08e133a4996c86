"""Decoding: FrameDecoder turns arbitrarily split chunks back into exactly the frames packed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
import rframe
from rframe import Codec, Frame, FrameDecoder
from strategies import bodies, headers_unique, same_json

CONFIGS = [
    {},
    {"byteorder": "big"},
    {"json_header": False},
    {"json_header": False, "byteorder": "big"},
    {"checksum": "md5"},
    {"checksum": "sha256"},
]


def config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


frame_lists = st.lists(st.tuples(headers_unique, bodies), max_size=5)


def build(config, items):
    """The reference stream for items, and the (header, body) pairs a decoder must return."""
    codec = ref.Codec(**config)
    stream = b"".join(codec.pack(body) if not codec.json_header else codec.pack(body, h) for h, body in items)
    if codec.json_header:
        expected = [(json.loads(codec.header_bytes(body, h)), body) for h, body in items]
    else:
        expected = [({}, body) for _, body in items]
    return stream, expected


def assert_frames(got, expected):
    assert all(isinstance(f, Frame) for f in got)
    assert len(got) == len(expected), (got, expected)
    for frame, (header, body) in zip(got, expected):
        assert same_json(frame.header, header), (frame.header, header)
        assert type(frame.body) is bytes
        assert frame.body == body


def feed_chunks(decoder, chunks):
    out = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def chunked(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


# ---------------------------------------------------------------- property tests


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@given(items=frame_lists)
@settings(max_examples=40, deadline=None)
def test_decoder_whole_stream_in_one_feed(config, items):
    stream, expected = build(config, items)
    dec = FrameDecoder(Codec(**config))
    assert_frames(dec.feed(stream), expected)
    assert dec.pending == 0
    assert dec.close() is None


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@given(items=frame_lists)
@settings(max_examples=30, deadline=None)
def test_decoder_one_byte_at_a_time(config, items):
    stream, expected = build(config, items)
    dec = FrameDecoder(Codec(**config))
    assert_frames(feed_chunks(dec, chunked(stream, 1)), expected)
    assert dec.close() is None


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@given(items=frame_lists, data=st.data())
@settings(max_examples=50, deadline=None)
def test_decoder_random_splits_match_reference_feed_by_feed(config, items, data):
    stream, expected = build(config, items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    dec = FrameDecoder(Codec(**config))
    oracle = ref.Decoder(ref.Codec(**config))
    got = []
    for lo, hi in zip(bounds, bounds[1:]):
        chunk = stream[lo:hi]
        frames = dec.feed(chunk)
        # Every feed returns every frame completed so far, no more, no less.
        assert_frames(frames, oracle.feed(chunk))
        got.extend(frames)
    assert_frames(got, expected)
    assert dec.close() is None


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@given(items=frame_lists)
@settings(max_examples=25, deadline=None)
def test_decoder_chunk_sizes_1_to_9(config, items):
    stream, expected = build(config, items)
    for size in range(1, 10):
        dec = FrameDecoder(Codec(**config))
        assert_frames(feed_chunks(dec, chunked(stream, size)), expected)
        assert dec.close() is None


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@given(items=frame_lists, data=st.data())
@settings(max_examples=30, deadline=None)
def test_decoder_pending_counts_bytes_fed_but_not_yet_returned(config, items, data):
    codec = ref.Codec(**config)
    sizes = [len(codec.pack(body) if not codec.json_header else codec.pack(body, h)) for h, body in items]
    stream, _ = build(config, items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    dec = FrameDecoder(Codec(**config))
    assert dec.pending == 0
    returned = 0
    for lo, hi in zip(bounds, bounds[1:]):
        returned += len(dec.feed(stream[lo:hi]))
        assert dec.pending == hi - sum(sizes[:returned])


# ---------------------------------------------------------------- explicit cases


def test_decoder_feed_empty_chunk_returns_no_frames():
    dec = FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.pending == 0
    data = ref.pack_frame(b"abc")
    assert dec.feed(data[:6]) == []
    assert dec.feed(b"") == []
    assert dec.pending == 6
    assert_frames(dec.feed(data[6:]), [({"total_size": 3}, b"abc")])


def test_decoder_one_whole_frame():
    data = ref.pack_frame(b"hello", {"file_name": "a.txt"})
    assert_frames(FrameDecoder().feed(data), [({"file_name": "a.txt", "total_size": 5}, b"hello")])


def test_decoder_several_frames_in_one_chunk():
    items = [({"n": i}, bytes([i]) * i) for i in range(6)]
    stream, expected = build({}, items)
    assert_frames(FrameDecoder().feed(stream), expected)


TWO_FRAMES = [({"name": "first"}, b"body-one"), ({"name": "second"}, b"body-two!")]
_first_len = len(ref.pack_frame(b"body-one", {"name": "first"}))
_first_header_len = len(ref.Codec().header_bytes(b"body-one", {"name": "first"}))
SPLITS = {
    "inside_length": 2,
    "after_length": 4,
    "inside_header": 4 + _first_header_len // 2,
    "after_header": 4 + _first_header_len,
    "inside_body": 4 + _first_header_len + 3,
    "between_frames": _first_len,
    "inside_next_length": _first_len + 3,
    "inside_next_header": _first_len + 9,
}


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_decoder_chunk_boundary_at(split):
    stream, expected = build({}, TWO_FRAMES)
    dec = FrameDecoder()
    first = dec.feed(stream[:split])
    second = dec.feed(stream[split:])
    assert len(first) == (1 if split >= _first_len else 0)
    assert_frames(first + second, expected)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_decoder_every_two_way_split(config):
    stream, expected = build(config, TWO_FRAMES)
    for split in range(len(stream) + 1):
        dec = FrameDecoder(Codec(**config))
        assert_frames(dec.feed(stream[:split]) + dec.feed(stream[split:]), expected)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_decoder_empty_body(config):
    stream, expected = build(config, [({}, b""), ({"a": 1}, b""), ({}, b"x")])
    assert_frames(FrameDecoder(Codec(**config)).feed(stream), expected)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_decoder_body_that_looks_like_framing_is_not_parsed(config):
    inner = ref.Codec(**config).pack(b"inner")
    stream, expected = build(config, [({}, inner), ({}, inner + inner)])
    assert_frames(FrameDecoder(Codec(**config)).feed(stream), expected)


def test_decoder_accepts_bytearray_and_memoryview_chunks():
    stream = ref.pack_frame(b"abc", {"k": "v"}) * 2
    dec = FrameDecoder()
    got = (
        dec.feed(bytearray(stream[:7]))
        + dec.feed(memoryview(stream)[7:20])
        + dec.feed(memoryview(bytearray(stream[20:])))
    )
    assert_frames(got, [({"k": "v", "total_size": 3}, b"abc")] * 2)


def test_decoder_does_not_keep_a_reference_to_the_fed_buffer():
    stream = ref.pack_frame(b"abcdef")
    buf = bytearray(stream[:10])
    dec = FrameDecoder()
    assert dec.feed(buf) == []
    buf[:] = b"\xff" * len(buf)  # the caller reuses its buffer
    assert_frames(dec.feed(stream[10:]), [({"total_size": 6}, b"abcdef")])


def test_decoder_length_only_header_is_empty_dict():
    (frame,) = FrameDecoder(Codec(json_header=False)).feed(ref.Codec(json_header=False).pack(b"xyz"))
    assert frame.header == {} and type(frame.header) is dict
    assert frame.body == b"xyz"


def test_decoder_course_md5_placeholder_round_trips_unchanged():
    header = {"file_name": "text1", "md5": 54645898788}
    (frame,) = FrameDecoder().feed(ref.pack_frame(b"output", header))
    assert same_json(frame.header, {"file_name": "text1", "md5": 54645898788, "total_size": 6})
    assert frame.body == b"output"


def test_decoder_uses_default_codec():
    dec = FrameDecoder()
    assert dec.codec.byteorder == "little" and dec.codec.json_header is True
    assert_frames(dec.feed(ref.pack_frame(b"a")), [({"total_size": 1}, b"a")])


def test_codec_decoder_carries_the_codec_settings():
    dec = Codec(byteorder="big", json_header=False).decoder()
    assert isinstance(dec, FrameDecoder)
    assert dec.codec.byteorder == "big" and dec.codec.json_header is False
    stream = ref.Codec(byteorder="big", json_header=False).pack(b"abc")
    assert_frames(dec.feed(stream), [({}, b"abc")])


@pytest.mark.parametrize(
    "header", [{"s": "a\ud800b"}, {"l": ["\udc00"]}, {"\udfff": 1}], ids=["high_in_value", "low_in_list", "in_key"]
)
def test_decoder_header_with_lone_surrogate_escape_matches_json_loads(header):
    # json.dumps writes a lone surrogate as a \udXXX escape, and json.loads reads it back.
    data = ref.pack_frame(b"z", header)
    (frame,) = FrameDecoder().feed(data)
    assert same_json(frame.header, json.loads(ref.Codec().header_bytes(b"z", header)))


FOREIGN_HEADERS = {
    "compact_separators": b'{"a":[1,2],"total_size":2}',
    "whitespace": b' \n\t{ "total_size" : 2 ,\r\n "a" : { } } \n',
    "raw_utf8": '{"名前": "ファイル😀", "total_size": 2}'.encode(),
    "unicode_escapes": b'{"\\u00e9": "\\ud83d\\ude00\\n\\/", "total_size": 2}',
    "number_forms": b'{"a": -0, "b": 2.5e3, "c": 1E2, "d": 1.0, "e": 123456789012345678901234567890, "total_size": 2}',
}


@pytest.mark.parametrize("hb", FOREIGN_HEADERS.values(), ids=FOREIGN_HEADERS.keys())
def test_decoder_accepts_any_json_object_header_like_json_loads(hb):
    data = len(hb).to_bytes(4, "little") + hb + b"ok"
    (frame,) = FrameDecoder().feed(data)
    assert same_json(frame.header, json.loads(hb))
    assert frame.body == b"ok"


def test_decoder_large_body_in_big_chunks():
    body = bytes(range(256)) * 8192  # 2 MiB
    stream = ref.pack_frame(body, {"k": 1}) * 2
    dec = FrameDecoder()
    got = feed_chunks(dec, chunked(stream, 65536 + 7))
    assert_frames(got, [({"k": 1, "total_size": len(body)}, body)] * 2)


def test_decoder_module_pack_frame_round_trip():
    # rframe's own encoder and decoder agree (not only with the reference).
    data = rframe.pack_frame(b"abc", {"x": [1, 2]}, y="z")
    assert_frames(FrameDecoder().feed(data), [({"x": [1, 2], "y": "z", "total_size": 3}, b"abc")])


# A decoder compares each header key with the key at the same position of the
# last header (a fast path); these streams change the keys under it.
SHIFTING_HEADERS = [
    '{"file_name": "a", "md5": 1, "total_size": 3}',
    '{"file_name": "b", "md5": 2, "total_size": 3}',  # the same keys
    '{"file_nam": "c", "md5": 3, "total_size": 3}',  # a prefix of the last key
    '{"file_names": "d", "md5": 4, "total_size": 3}',  # the last key plus more
    '{"md5": 5, "file_name": "e", "total_size": 3}',  # the same keys, reordered
    '{"md5": 6, "total_size": 3}',  # fewer keys
    '{"md5": 7, "md5": 8, "total_size": 3}',  # a repeated key: the last value counts
    '{"md5": 9, "total_size": 3, "md5": 10}',
    '{"md5":11,"total_size":3}',  # compact separators
    '{ "md5" : 12 ,\n "total_size" : 3 }',  # other whitespace
    '{"m\\u0064\\u0035": 13, "total_size": 3}',  # the same key, escaped
    '{"md5": 14, "total_size": 3, "caf\u00e9": "x"}',  # a non-ASCII key
    '{"md5": "\\"q\\"", "total_size": 3}',  # an escaped value
    '{"total_size": 3, "md5": 15}',
    '{"total_size": 3, "md5": 16}',
    '{"total_size":3,"md5":17}',  # compact again, after the keys were remembered
    '{"total_size":  3,"md5":\t18}',  # white space after the colons
    '{"total_size" :3,"md5"\n:19}',  # white space before them
    '{"total_size":3,"md5":20}',
]


def shifting_stream():
    stream = b""
    for text in SHIFTING_HEADERS:
        head = text.encode()
        stream += len(head).to_bytes(4, "little") + head + b"xyz"
    return stream


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_decoder_headers_whose_keys_shift_between_frames_read_as_json_loads(chunk):
    stream = shifting_stream()
    dec = FrameDecoder()
    frames = [f for i in range(0, len(stream), chunk) for f in dec.feed(stream[i : i + chunk])]
    assert [list(f.header.items()) for f in frames] == [list(json.loads(t).items()) for t in SHIFTING_HEADERS]
    assert all(f.body == b"xyz" for f in frames)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.sampled_from(["a", "ab", "b", "total", "md5"]), st.integers(0, 9)), max_size=4),
        min_size=1,
        max_size=8,
    )
)
def test_decoder_keys_from_a_small_alphabet_keep_json_loads_order(members):
    """Headers drawn from a few keys repeat, reorder and duplicate them often."""
    texts = []
    for pairs in members:
        inner = ", ".join(f'"{k}": {v}' for k, v in pairs + [("total_size", 1)])
        texts.append("{" + inner + "}")
    stream = b"".join(len(t).to_bytes(4, "little") + t.encode() + b"!" for t in texts)
    frames = FrameDecoder().feed(stream)
    assert [list(f.header.items()) for f in frames] == [list(json.loads(t).items()) for t in texts]
