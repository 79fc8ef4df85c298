"""The body parser alone: whatever arrives, a list of pairs or BadInput, nothing else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from web_min.bodies import (
    MAX_BODY_BYTES,
    BadInput,
    Pairs,
    encode_json,
    parse_body,
    text_field,
    text_pairs,
)

CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "", "text/plain",
                 "application/json; charset=utf-8", "application/vnd.api+json"]

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(raw=st.binary(max_size=300), content_type=st.sampled_from(CONTENT_TYPES))
def test_any_bytes_give_pairs_or_bad_input(raw: bytes, content_type: str) -> None:
    try:
        pairs = parse_body(content_type, raw)
    except BadInput as err:
        message = str(err)
        assert message  # every refusal says why
        return
    assert isinstance(pairs, Pairs)
    for name, _ in pairs:
        assert isinstance(name, str)


@given(value=st.dictionaries(st.text(max_size=10), _json_values, max_size=5))
def test_any_json_object_reads_and_only_strings_pass(value: dict[str, object]) -> None:
    pairs = parse_body("application/json", json.dumps(value).encode())
    assert [name for name, _ in pairs] == list(value)
    for name in value:
        if isinstance(value[name], str) and name != "csrf_token":
            assert text_field(pairs, name) == value[name]
        elif not isinstance(value[name], str):
            with pytest.raises(BadInput):
                text_field(pairs, name)
    if all(isinstance(v, str) for v in value.values()):
        assert text_pairs(pairs) == [(k, v) for k, v in value.items() if k != "csrf_token"]
    else:
        with pytest.raises(BadInput):
            text_pairs(pairs)


def test_duplicate_json_keys_are_kept() -> None:
    assert parse_body("application/json", b'{"a": "1", "a": "2"}') == [("a", "1"), ("a", "2")]
    with pytest.raises(BadInput, match="只能出现一次"):
        text_field(parse_body("application/json", b'{"a": "1", "a": "2"}'), "a")


def test_a_json_body_is_recognised_without_its_content_type() -> None:
    # urllib sends application/x-www-form-urlencoded unless told otherwise.
    assert parse_body("application/x-www-form-urlencoded", b' {"a": "b"}') == [("a", "b")]


def test_forms_decode_utf8_names_and_values() -> None:
    raw = "苹果=梨子&x=%E9%A6%99%E8%95%89".encode()
    assert parse_body("application/x-www-form-urlencoded", raw) == [("苹果", "梨子"), ("x", "香蕉")]
    with pytest.raises(BadInput, match="UTF-8"):
        parse_body("application/x-www-form-urlencoded", b"a=%ff")


def test_limits() -> None:
    with pytest.raises(BadInput, match="太大"):
        parse_body("application/json", b'{"a": "' + b"x" * MAX_BODY_BYTES + b'"}')
    with pytest.raises(BadInput, match="嵌套太深"):
        parse_body("application/json", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(BadInput, match="Content-Type"):
        parse_body("text/xml", b"<a/>")
    assert parse_body("application/json", b"  ") == []


def test_lone_surrogates_are_not_text() -> None:
    pairs = parse_body("application/json", b'{"a": "\\ud800"}')
    with pytest.raises(BadInput):
        text_field(pairs, "a")
    with pytest.raises(BadInput):
        text_pairs(parse_body("application/json", b'{"\\udfff": "x"}'))


@given(st.text())
def test_encoded_json_round_trips_and_has_no_markup(text: str) -> None:
    raw = encode_json({"k": text})
    assert json.loads(raw) == {"k": text}
    assert b"<" not in raw
    assert b">" not in raw
    assert b"&" not in raw
