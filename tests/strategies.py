"""Hypothesis strategies for JSON-able headers, and an exact JSON-value comparison."""

from __future__ import annotations

import math

from hypothesis import strategies as st

# Python values json.dumps(allow_nan=False) accepts. Text covers the whole of
# Unicode but surrogates: control characters, DEL, non-ASCII and astral chars.
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers() | st.integers(min_value=-(2**200), max_value=2**200)
scalars = st.none() | st.booleans() | ints | finite_floats | st.text(max_size=20)

# Keys json.dumps converts to strings: str, int, float, bool and None.
any_keys = st.text(max_size=12) | ints | finite_floats | st.booleans() | st.none()


def json_key(key) -> str:
    """The string json.dumps writes for a dict key."""
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key)
    raise TypeError(key)


def _dicts_any(values):
    return st.dictionaries(any_keys, values, max_size=5)


def _without_colliding_keys(d):
    """Drop keys whose JSON string an earlier key already produced (1 after "1")."""
    seen, out = set(), {}
    for k, v in d.items():
        if json_key(k) not in seen:
            seen.add(json_key(k))
            out[k] = v
    return out


def _dicts_unique(values):
    # No two keys that json.dumps turns into the same string (1 and "1"):
    # a JSON object cannot hold duplicate names, so they could not round-trip.
    return _dicts_any(values).map(_without_colliding_keys)


def _values(dicts):
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.lists(children, max_size=4).map(tuple) | dicts(children),
        max_leaves=12,
    )


# Headers for pack byte-identity: any keys, duplicates after conversion included.
headers_any = _dicts_any(_values(_dicts_any))
# Headers for decode round-trips: every object's keys convert to distinct strings.
headers_unique = _dicts_unique(_values(_dicts_unique))

# Keyword fields: names that are not pack's own parameters.
field_names = st.text(max_size=10).filter(lambda s: s not in ("body", "header"))
fields = st.dictionaries(field_names, _values(_dicts_any), max_size=3)

bodies = st.binary(max_size=64) | st.binary(min_size=100, max_size=600)


def same_json(a, b) -> bool:
    """Equal as JSON values *and* Python types, dict key order included.

    ``==`` would call 1 == 1.0 == True and 0.0 == -0.0 equal; a decoder that
    turned an int into a float, or lost a key's position, must not pass.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a.hex() == b.hex() if not math.isnan(a) else math.isnan(b)
    return a == b
