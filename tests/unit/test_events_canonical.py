"""Canonical JSON: the appendix examples, and the strict number rules of room v6+."""

from __future__ import annotations

import json

import pytest

from homeserver.events.canonical import (
    MAX_SAFE_INTEGER,
    CanonicalJsonError,
    check_strict_json,
    encode_canonical_json,
)

# (input as written in the spec, expected canonical form), appendices "Canonical JSON".
SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {
            "display_name": "John Doe", "three_pids": [
              {"medium": "email", "address": "john.doe@example.org"},
              {"medium": "msisdn", "address": "123456789"}]}}}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
]


@pytest.mark.parametrize(("source", "expected"), SPEC_EXAMPLES)
def test_spec_canonical_json_examples(source: str, expected: str) -> None:
    assert encode_canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_spec_example_negative_zero_and_exponent() -> None:
    # The spec writes {"a": -0, "b": 1e10}; as integers these are 0 and 10000000000.
    assert encode_canonical_json({"a": -0, "b": 10**10}) == b'{"a":0,"b":10000000000}'


def test_canonical_json_escapes_only_what_it_must() -> None:
    assert encode_canonical_json({"a": '\x00\n"\\/é\u2028'}) == (
        '{"a":"\\u0000\\n\\"\\\\/é\u2028"}'.encode()
    )


@pytest.mark.parametrize(
    "value",
    [
        {"a": MAX_SAFE_INTEGER, "b": -MAX_SAFE_INTEGER, "c": [True, None, "x"]},
        {"nested": {"deep": [{"ok": 1}]}},
    ],
)
def test_strict_json_accepts(value) -> None:
    check_strict_json(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"a": 2**53}, "out of range"),
        ({"a": -(2**53)}, "out of range"),
        ({"a": [1.5]}, "floats"),
        ({"a": 1.0}, "floats"),
        ({"a": float("nan")}, "floats"),
        ({"a": "\ud800"}, "surrogate"),
        ({"\udfff": 1}, "surrogate"),
    ],
)
def test_strict_json_rejects(value, reason: str) -> None:
    with pytest.raises(CanonicalJsonError, match=reason):
        check_strict_json(value)
