"""Encoding: Codec.pack / pack_frame are byte-identical to the course's struct + json code."""

from __future__ import annotations

import collections
import decimal
import enum
import json
import math
import types
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
import rframe
from rframe import Codec
from strategies import bodies, fields, headers_any

JSON_CONFIGS = [
    {},
    {"byteorder": "big"},
    {"checksum": "md5"},
    {"checksum": "sha256"},
    {"byteorder": "big", "checksum": "sha256"},
]
LENGTH_ONLY_CONFIGS = [{"json_header": False}, {"json_header": False, "byteorder": "big"}]


def config_id(config):
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


# ---------------------------------------------------------------- literal vectors


def test_pack_literal_vector_default_codec():
    assert rframe.pack_frame(b"hi") == b'\x11\x00\x00\x00{"total_size": 2}hi'


def test_pack_literal_vector_big_endian():
    assert Codec(byteorder="big").pack(b"hi") == b'\x00\x00\x00\x11{"total_size": 2}hi'


def test_pack_literal_vector_length_only_little_endian():
    assert Codec(json_header=False).pack(b"hi") == bytes.fromhex("02000000") + b"hi"


def test_pack_literal_vector_length_only_big_endian():
    assert Codec(json_header=False, byteorder="big").pack(b"hi") == bytes.fromhex("00000002") + b"hi"


def test_pack_literal_vector_course_header():
    header = {"file_name": "text1", "md5": 54645898788}
    assert rframe.pack_frame(b"abc", header) == (
        b';\x00\x00\x00{"file_name": "text1", "md5": 54645898788, "total_size": 3}abc'
    )


def test_pack_literal_vector_sha256_checksum():
    digest = "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
    hb = ('{"sha256": "%s", "total_size": 2}' % digest).encode()  # noqa: UP031 - a JSON template reads better without {{ }}
    assert Codec(checksum="sha256").pack(b"hi") == len(hb).to_bytes(4, "little") + hb + b"hi"


def test_pack_literal_vector_fields_from_docstring():
    assert rframe.pack_frame(b"hello", file_name="a.txt")[4:] == b'{"file_name": "a.txt", "total_size": 5}hello'


# ---------------------------------------------------------------- headers


EXPLICIT_HEADERS = {
    "none": None,
    "empty": {},
    "course": {"file_name": "text1", "md5": 54645898788},
    "nested": {"a": {"b": [1, {"c": None}, []]}, "t": (1, (2, "x")), "e": {}},
    "non_ascii": {"名前": "ファイル", "é": "ü", "ß": "Ω"},
    "astral": {"emoji": "😀𝄞", "😀": "\U0010ffff"},
    "control_chars": {"c": "".join(map(chr, range(32))), "\n\t": "\b\f\r"},
    "del_quotes_backslash_slash": {"d": '\x7f"\\/', "\x7f": "'"},
    "big_ints": {"u64": 2**64, "huge": 2**200, "neg": -(2**70), "i64max": 2**63 - 1, "i64min": -(2**63)},
    "negative_ints": {"n": -1, "m": -123456789, "z": 0},
    "floats": {
        "a": 1e16,
        "b": 1e-05,
        "c": -0.0,
        "d": 0.1,
        "e": 1.7976931348623157e308,
        "f": 5e-324,
        "g": 1e22,
        "h": 123456789.123,
        "i": 1.0,
        "j": 2.5e-07,
        "k": 1e15,
        "l": -1.5e-300,
        "m": 0.30000000000000004,
    },
    "bools_and_none": {"t": True, "f": False, "n": None, "l": [True, None, False]},
    "non_string_keys": {
        3: "int",
        2.5: "float",
        True: "bool",
        None: "none",
        -7: "neg",
        1e16: "f",
        2**70: "big",
        0.1: "x",
    },
    "false_key": {False: 0, "a": 1},
    "duplicate_after_conversion": {1: "int", "1": "str", 1.5: "f", "1.5": "s"},
    "key_order": {"z": 1, "a": 2, "m": 3, "b": 4},
    "total_size_keeps_position": {"total_size": 99, "a": 1},
    "empty_string_key": {"": ""},
    "long_string": {"s": "x" * 10000 + "é" * 1000},
}


@pytest.mark.parametrize("header", EXPLICIT_HEADERS.values(), ids=EXPLICIT_HEADERS.keys())
def test_pack_matches_reference_for_explicit_headers(header):
    assert rframe.pack_frame(b"body", header) == ref.pack_frame(b"body", header)


# json.dumps (ensure_ascii) writes lone surrogates as \ud800 escapes; the course accepts them.


def test_pack_matches_reference_for_lone_surrogates_in_values():
    header = {"s": "\ud800", "l": ["a\udc00b"]}
    assert rframe.pack_frame(b"", header) == ref.pack_frame(b"", header)


def test_pack_matches_reference_for_lone_surrogates_in_keys():
    header = {"\udfff": 1, "a": {"x\ud800": 2}}
    assert rframe.pack_frame(b"", header) == ref.pack_frame(b"", header)


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Ratio(float):
    pass


Point = collections.namedtuple("Point", "x y")


def test_pack_matches_json_for_builtin_subclasses():
    # json.dumps writes an int/str/float/tuple/dict subclass as the base value.
    header = {
        "enum": Color.RED,
        Name("key"): Name("value"),
        "ratio": Ratio(0.5),
        "point": Point(1, 2),
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "default": collections.defaultdict(list, {"k": [1]}),
        Color.RED: "enum key",
    }
    assert rframe.pack_frame(b"", header) == ref.pack_frame(b"", header)


class ReadOnlyMapping(Mapping):
    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


@pytest.mark.parametrize(
    "make",
    [collections.OrderedDict, types.MappingProxyType, ReadOnlyMapping],
    ids=["OrderedDict", "MappingProxyType", "Mapping_subclass"],
)
def test_pack_accepts_any_mapping_as_header(make):
    items = {"z": 1, "a": [2, 3], 4: None}
    assert rframe.pack_frame(b"x", make(items)) == ref.pack_frame(b"x", dict(items))


def test_pack_deeply_nested_header_matches_reference():
    value = "leaf"
    for i in range(300):
        value = [value] if i % 2 else {"k": value}
    header = {"deep": value}
    assert rframe.pack_frame(b"", header) == ref.pack_frame(b"", header)


def test_pack_fields_are_added_after_header_keys():
    assert rframe.pack_frame(b"x", {"a": 1}, b=2, c=[3]) == ref.pack_frame(b"x", {"a": 1}, b=2, c=[3])


def test_pack_fields_override_header_keys_in_place():
    packed = rframe.pack_frame(b"x", {"a": 1, "b": 2}, a="new")
    assert packed == ref.pack_frame(b"x", {"a": 1, "b": 2}, a="new")
    assert packed[4:].startswith(b'{"a": "new", "b": 2,')


def test_pack_total_size_field_is_overwritten_with_body_length():
    header = {"total_size": 12345, "a": 1}
    assert rframe.pack_frame(b"abc", header) == ref.pack_frame(b"abc", header)
    assert rframe.pack_frame(b"abc", total_size=7) == ref.pack_frame(b"abc", total_size=7)


def test_pack_does_not_modify_the_header_passed_in():
    header = {"a": 1}
    Codec(checksum="md5").pack(b"abc", header, b=2)
    assert header == {"a": 1}


@given(header=headers_any, body=bodies, extra=fields, config=st.sampled_from(JSON_CONFIGS))
@settings(max_examples=200, deadline=None)
def test_pack_matches_reference_for_random_headers(header, body, extra, config):
    assert Codec(**config).pack(body, header, **extra) == ref.Codec(**config).pack(body, header, **extra)


@given(header=headers_any, body=bodies, extra=fields)
@settings(max_examples=100, deadline=None)
def test_pack_frame_equals_default_codec_pack(header, body, extra):
    assert rframe.pack_frame(body, header, **extra) == Codec().pack(body, header, **extra)


# ---------------------------------------------------------------- bodies and modes


BODIES = {
    "bytes": b"\x00\x01hello\xff",
    "empty_bytes": b"",
    "bytearray": bytearray(b"abc\x00"),
    "memoryview": memoryview(b"0123456789"),
    "memoryview_slice_of_bytearray": memoryview(bytearray(b"0123456789"))[2:7],
    "str_ascii": "hello",
    "str_non_ascii": "héllo 你好 😀",
    "empty_str": "",
    "body_that_looks_like_a_frame": ref.pack_frame(b"inner", {"total_size": 1}),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize("config", JSON_CONFIGS + LENGTH_ONLY_CONFIGS, ids=config_id)
def test_pack_accepts_every_body_type(body, config):
    assert Codec(**config).pack(body) == ref.Codec(**config).pack(body)


@given(body=bodies, config=st.sampled_from(LENGTH_ONLY_CONFIGS))
@settings(max_examples=100, deadline=None)
def test_pack_length_only_matches_reference(body, config):
    assert Codec(**config).pack(body) == ref.Codec(**config).pack(body)


def test_pack_length_only_rejects_header():
    with pytest.raises(ValueError):
        Codec(json_header=False).pack(b"x", {"a": 1})


def test_pack_length_only_rejects_fields():
    with pytest.raises(ValueError):
        Codec(json_header=False).pack(b"x", a=1)


@pytest.mark.parametrize("body", [5, 1.5, object(), [1, 2]], ids=["int", "float", "object", "list"])
def test_pack_rejects_non_bytes_body(body):
    with pytest.raises(TypeError):
        rframe.pack_frame(body)


# ---------------------------------------------------------------- invalid headers


NAN_HEADERS = {
    "nan_value": {"x": math.nan},
    "inf_value": {"x": math.inf},
    "neg_inf_value": {"x": -math.inf},
    "nan_nested_in_list": {"x": [1, {"y": math.nan}]},
    "inf_nested_in_tuple": {"x": (1, (math.inf,))},
    "nan_key": {math.nan: 1},
    "inf_key": {math.inf: 1},
    "nested_neg_inf_key": {"a": {-math.inf: 1}},
}


@pytest.mark.parametrize("header", NAN_HEADERS.values(), ids=NAN_HEADERS.keys())
def test_pack_rejects_nan_and_infinity_with_value_error(header):
    with pytest.raises(ValueError):
        ref.pack_frame(b"", header)  # the oracle agrees
    with pytest.raises(ValueError):
        rframe.pack_frame(b"", header)


def test_pack_rejects_nan_in_fields_with_value_error():
    with pytest.raises(ValueError):
        rframe.pack_frame(b"", x=math.nan)


NON_JSON_HEADERS = {
    "set": {"x": {1, 2}},
    "bytes": {"x": b"ab"},
    "bytearray_in_list": {"x": [1, bytearray(b"a")]},
    "object": {"x": object()},
    "complex": {"x": 1j},
    "decimal": {"x": decimal.Decimal("1.5")},
    "tuple_key": {(1, 2): 1},
    "nested_tuple_key": {"a": {(1,): 2}},
    "frozenset_key": {frozenset(): 1},
    "bytes_key": {b"k": 1},
}


@pytest.mark.parametrize("header", NON_JSON_HEADERS.values(), ids=NON_JSON_HEADERS.keys())
def test_pack_rejects_non_json_values_with_type_error(header):
    with pytest.raises(TypeError):
        ref.pack_frame(b"", header)  # the oracle agrees
    with pytest.raises(TypeError):
        rframe.pack_frame(b"", header)


def test_pack_rejects_non_json_fields_with_type_error():
    with pytest.raises(TypeError):
        rframe.pack_frame(b"", x={1, 2})


@pytest.mark.parametrize(
    "header", [[("a", 1)], 5, "ab", b"ab", 1.5, ["x"]], ids=["pairs", "int", "str", "bytes", "float", "list"]
)
def test_pack_rejects_header_that_is_not_a_mapping(header):
    with pytest.raises(TypeError):
        rframe.pack_frame(b"", header)


def test_pack_rejects_circular_dict_with_value_error():
    header = {"a": 1}
    header["self"] = header
    with pytest.raises(ValueError):
        rframe.pack_frame(b"", header)


def test_pack_rejects_circular_list_with_value_error():
    loop = [1]
    loop.append(loop)
    with pytest.raises(ValueError):
        rframe.pack_frame(b"", {"l": loop})


def test_pack_allows_the_same_object_twice_without_a_cycle():
    shared = {"k": [1, 2]}
    header = {"a": shared, "b": shared, "c": [shared, shared]}
    assert rframe.pack_frame(b"", header) == ref.pack_frame(b"", header)


# ---------------------------------------------------------------- codec


def test_codec_defaults():
    codec = Codec()
    assert codec.json_header is True
    assert codec.byteorder == "little"
    assert codec.max_header == 65536
    assert codec.max_body == 268435456
    assert codec.checksum is None


def test_codec_reports_its_settings():
    codec = Codec(json_header=False, byteorder="big", max_header=10, max_body=20)
    assert (codec.json_header, codec.byteorder, codec.max_header, codec.max_body) == (False, "big", 10, 20)
    assert Codec(checksum="md5").checksum == "md5"
    assert Codec(checksum="sha256").checksum == "sha256"


def test_codec_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        Codec(False)


def test_pack_header_is_json_dumps_output():
    # Independent of the reference: the header bytes parse back with json.loads.
    packed = rframe.pack_frame(b"12345", {"a": [1, 2.5, None]})
    n = int.from_bytes(packed[:4], "little", signed=True)
    assert json.loads(packed[4 : 4 + n]) == {"a": [1, 2.5, None], "total_size": 5}
    assert packed[4 + n :] == b"12345"
