"""Frame: a (header, body) pair that unpacks, indexes and compares like a 2-tuple."""

from __future__ import annotations

import pytest

import reference as ref
from rframe import Frame, FrameDecoder


def decoded(body=b"hi", header=None, **fields):
    (frame,) = FrameDecoder().feed(ref.pack_frame(body, header, **fields))
    return frame


def test_frame_unpacks_into_header_and_body():
    header, body = decoded(b"hello", {"file_name": "a.txt"})
    assert header == {"file_name": "a.txt", "total_size": 5}
    assert body == b"hello"


def test_frame_equals_the_tuple_of_header_and_body():
    frame = decoded(b"hello", {"a": 1})
    assert (frame == ({"a": 1, "total_size": 5}, b"hello")) is True
    assert ({"a": 1, "total_size": 5}, b"hello") == frame


def test_frame_differs_from_other_tuples():
    frame = decoded(b"hello", {"a": 1})
    assert frame != ({"a": 1, "total_size": 5}, b"hellO")
    assert frame != ({"a": 2, "total_size": 5}, b"hello")
    assert frame != ({"a": 1, "total_size": 5}, b"hello", None)
    assert frame != "not a frame"


def test_frame_equals_an_equal_frame():
    assert Frame({"a": 1}, b"x") == Frame({"a": 1}, b"x")
    assert Frame({"a": 1}, b"x") != Frame({"a": 1}, b"y")


def test_frame_header_and_body_attributes():
    frame = decoded(b"\x00\xffdata", {"k": [1, 2]})
    assert frame.header == {"k": [1, 2], "total_size": 6}
    assert type(frame.header) is dict
    assert frame.body == b"\x00\xffdata"
    assert type(frame.body) is bytes


def test_frame_indexing():
    frame = decoded(b"abc", {"k": "v"})
    assert frame[0] == {"k": "v", "total_size": 3}
    assert frame[1] == b"abc"
    assert frame[-1] == b"abc"
    assert frame[-2] == frame[0]
    with pytest.raises(IndexError):
        frame[2]


def test_frame_len_is_two():
    assert len(decoded()) == 2
    assert len(Frame({}, b"")) == 2


def test_frame_iterates_header_then_body():
    frame = decoded(b"abc")
    assert list(frame) == [{"total_size": 3}, b"abc"]


def test_frame_repr_shows_header_and_body():
    frame = Frame({"file_name": "a.txt", "total_size": 2}, b"hi")
    text = repr(frame)
    assert repr(frame.header) in text, text
    assert repr(b"hi") in text, text


def test_frame_constructor_keeps_header_and_body():
    frame = Frame({"a": [1, 2]}, b"payload")
    assert frame.header == {"a": [1, 2]}
    assert frame.body == b"payload"
    assert Frame(header={"b": 1}, body=b"x") == ({"b": 1}, b"x")


def test_frame_constructor_defaults_to_empty_header_and_body():
    frame = Frame()
    assert frame.header == {} and frame.body == b""


def test_frame_text_decodes_utf8_by_default():
    assert decoded("héllo 你好 😀".encode()).text == "héllo 你好 😀"


def test_frame_text_uses_header_encoding():
    # The course's server sends Windows command output in GBK.
    frame = decoded("目录 列表".encode("gbk"), encoding="gbk")
    assert frame.text == "目录 列表"
    assert Frame({"encoding": "latin-1"}, b"caf\xe9").text == "café"


def test_frame_text_of_length_only_frame_is_utf8():
    from rframe import Codec

    (frame,) = FrameDecoder(Codec(json_header=False)).feed(ref.Codec(json_header=False).pack("ü".encode()))
    assert frame.text == "ü"
