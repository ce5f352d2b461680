"""The filters the haproxy role checks API keys with and writes their hashes with."""

from __future__ import annotations

import hashlib

import pytest
import repo_scripts

api_keys = repo_scripts.load("plugins/filter/api_keys.py")
GOOD, OTHER = "k" * 40, "j" * 40


def test_right_keys_have_no_problems():
    keys = [
        {"name": "tenant-a", "key": GOOD},
        {"name": "tenant_b.2", "key": OTHER, "requests_per_minute": 60, "concurrent_requests": "4"},
    ]
    assert api_keys.api_key_problems(keys) == []
    assert api_keys.api_key_problems([]) == []


@pytest.mark.parametrize(
    ("keys", "problems"),
    [
        ([{"name": "a", "key": ""}], ["key 'a' has an empty key"]),
        ([{"name": "a", "key": "  "}], ["key 'a' has an empty key"]),
        ([{"name": "a", "key": "x" * 31}], ["key 'a' is shorter than 32 characters"]),
        ([{"name": "a", "key": "x" * 31 + " y"}], ["key 'a' has white space in it"]),
        ([{"key": GOOD}], ["entry 1 has no name"]),
        (
            [{"name": "two words", "key": GOOD}],
            ["key 'two words': a name is 1 to 64 letters, digits and ._- only"],
        ),
        (
            [{"name": "a", "key": GOOD}, {"name": "a", "key": OTHER}],
            ["the name 'a' is given to 2 keys"],
        ),
        (
            [{"name": "a", "key": GOOD}, {"name": "b", "key": GOOD}],
            ["keys 'a' and 'b' are the same key"],
        ),
        (
            [{"name": "a", "key": GOOD, "requests_per_minute": 0, "concurrent_requests": "2.5"}],
            [
                "key 'a': requests_per_minute must be a whole number above 0",
                "key 'a': concurrent_requests must be a whole number above 0",
            ],
        ),
        (
            [{"name": "a", "key": GOOD, "requests_per_minute": True}],
            ["key 'a': requests_per_minute must be a whole number above 0"],
        ),
        ([{"name": "a", "key": GOOD, "rpm": 5}], ["key 'a' has unknown fields: rpm"]),
        (["a-key-as-text"], ["entry 1 is not a mapping of name and key"]),
    ],
)
def test_each_problem_names_the_key_by_name(keys, problems):
    found = api_keys.api_key_problems(keys)
    assert found == problems
    assert not any(GOOD in p or OTHER in p for p in found)


def test_the_hash_is_what_haproxys_sha2_and_hex_converters_write():
    assert api_keys.api_key_hash("secret") == hashlib.sha256(b"secret").hexdigest().upper()
    assert len(api_keys.api_key_hash(GOOD)) == 64
