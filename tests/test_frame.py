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


def test_frame_pickles_and_copies_as_header_and_body():
    import copy
    import pickle

    frame = decoded(b"abc", {"n": [1, 2]})
    for again in (pickle.loads(pickle.dumps(frame)), copy.copy(frame), copy.deepcopy(frame)):
        assert type(again) is Frame
        assert again == frame and again.header == {"n": [1, 2], "total_size": 3} and again.body == b"abc"
    deep = copy.deepcopy(frame)
    assert deep.header is not frame.header  # a deep copy copies the header dict


def test_frame_is_read_only_unhashable_and_not_a_base_type():
    frame = Frame({"a": 1}, b"x")
    for name in ("header", "body"):
        with pytest.raises(AttributeError):
            setattr(frame, name, None)
    with pytest.raises(TypeError, match="unhashable"):
        hash(frame)
    with pytest.raises(TypeError):
        type("Sub", (Frame,), {})
    with pytest.raises(TypeError):
        Frame.extra = 1  # type: ignore[attr-defined]
    assert Frame.__module__ == "rframe" and Frame.__name__ == "Frame"


def test_frame_only_compares_for_equality():
    frame = Frame({"a": 1}, b"x")
    assert (frame == 1) is False and (frame != "x") is True
    assert frame != ({"a": 1}, b"x", None)
    with pytest.raises(TypeError):
        frame < frame  # noqa: B015


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((1,), {}, "must be a dict, not int"),
        (({}, b"", 3), {}, "at most 2 arguments"),
        ((), {"x": 1}, "unexpected keyword argument 'x'"),
        (({},), {"header": {}}, "multiple values for argument 'header'"),
        ((), {"body": 5}, "must be a bytes-like object, not int"),  # not bytes(5), five zero bytes
        ((), {"body": [1, 2]}, "must be a bytes-like object, not list"),
        ((), {"body": "text"}, "must be a bytes-like object, not str"),
    ],
)
def test_frame_constructor_refuses_bad_arguments(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Frame(*args, **kwargs)


def test_frame_constructor_takes_any_bytes_like_body_and_none():
    assert Frame(None, None) == ({}, b"")
    assert type(Frame(body=bytearray(b"ab")).body) is bytes and Frame(body=bytearray(b"ab")).body == b"ab"
    assert type(Frame(body=memoryview(b"ab")).body) is bytes


def test_frames_hold_and_release_their_header_and_body():
    import sys

    header, body = {"k": 1}, b"body" * 10
    before = sys.getrefcount(header), sys.getrefcount(body), sys.getrefcount(Frame)
    frames = [Frame(header, body) for _ in range(1000)]
    assert all(f.header is header and f.body is body for f in frames)
    assert sys.getrefcount(header) - before[0] == 1000
    del frames
    assert (sys.getrefcount(header), sys.getrefcount(body), sys.getrefcount(Frame)) == before


def test_failed_frame_calls_release_what_their_errors_hold():
    # The slots run without pyo3's bookkeeping; an error raised from them once
    # left its references (its type, its message) queued for a later release,
    # unbounded: 20 MB per 100,000 failed calls.
    import sys

    frame = Frame({"a": 1}, b"x")
    before = sys.getrefcount(IndexError), sys.getrefcount(TypeError)
    for _ in range(1000):
        Frame()
        try:
            frame[2]
        except IndexError:
            pass
        try:
            Frame(1)
        except TypeError:
            pass
    after = sys.getrefcount(IndexError), sys.getrefcount(TypeError)
    assert after[0] - before[0] < 10 and after[1] - before[1] < 10, (before, after)
