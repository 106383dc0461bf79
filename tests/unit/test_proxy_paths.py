"""Reverse proxy paths and routes without I/O: normalisation, matching rules, path_replacement."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rigfast.proxy.apis import ApiError, RouteTable, parse_api
from rigfast.proxy.paths import decoded, encoded, normalize


@pytest.mark.parametrize("raw, want", [
    ("/public/../admin", "/admin"),
    ("/public/%2e%2e/admin", "/admin"),
    ("/public/..%2fadmin", "/admin"),
    ("/public/%2E%2E%2Fadmin", "/admin"),
    ("/public/x/../../admin", "/admin"),
    ("/public/..;jsessionid=1/admin", "/admin"),
    ("/public//../admin", "/admin"),
    ("/../../x", "/x"),
    ("/a/./b/", "/a/b/"),
    ("/a/.", "/a/"),
    ("/a/..", "/"),
    ("//a///b", "/a/b"),
    ("/a%20b/%41", "/a%20b/%41"),  # other escapes stay as sent
    ("/%252e%252e/x", "/%252e%252e/x"),  # double-encoded dots are not dots
    ("http://host:1/p/../q", "/q"),
    ("http://host", "/"),
])
def test_normalize(raw, want):
    assert normalize(raw) == want


@pytest.mark.parametrize("raw", ["*", "admin", "", "host:80"])
def test_not_a_path(raw):
    assert normalize(raw) is None


SEGMENT = st.sampled_from(["", ".", "..", "%2e", "%2E%2e", ".%2e", "..;x", "a", "b%2fc", "%2f", "x%20y", "ü", "%c3%bc"])


@settings(max_examples=200, deadline=None)
@given(st.lists(SEGMENT, max_size=8))
def test_normalized_paths_have_no_dot_segments(segments):
    """Whatever the client sends, the normalised path has no dot segment and no empty one, decoded or not, and
    normalising again changes nothing: what was matched is what the upstream resolves."""
    path = normalize("/" + "/".join(segments))
    assert path is not None and path.startswith("/")
    assert normalize(path) == path
    for form in (path, decoded(path)):
        inner = form.split("/")[1:-1]
        assert all(s.split(";")[0] not in (".", "..", "") for s in inner), form
        assert form.split("/")[-1].split(";")[0] not in (".", "..")


def test_decoded_and_encoded_round_trip():
    assert decoded("/caf%C3%A9/x%20y") == "/café/x y"
    assert decoded("/caf\xc3\xa9") == "/café"  # raw UTF-8 bytes (held as latin-1 characters)
    assert encoded("/café/x y") == b"/caf%C3%A9/x%20y"
    assert decoded(encoded("/a b/ü/%").decode()) == "/a b/ü/%"


def _api(endpoints, **more):
    return parse_api({"id": "a", "proxy": {"target_url": "h", "port": 1},
                      "version_data": {"default": {"endpoints": endpoints}}, **more}, env={})


def test_rewrite_groups_and_rules():
    api = _api([{"id": "e", "method": "GET", "path_regex": "/p/(\\d+)/(x)?(\\w+)",
                 "path_replacement": "/q/\\3/\\g{1}/\\2/\\0"}])
    table = RouteTable([api])
    ep, m = table.match("GET", "/P/12/Straße")
    assert ep is not None and ep.rewrite(m) == "/q/Straße/12//" + "/P/12/Straße"
    assert table.match("GET", "/x/p/12/a") == (None, None)  # anchored at the start
    assert table.match("GET", "/p/12/a/") == (None, None)  # and at the end
    assert RouteTable([_api([{"id": "e", "method": "GET", "path_regex": "/v"}], versioned=True)]).match("GET", "/v") == (None, None)


@pytest.mark.parametrize("replacement, message", [("/x/\\2", "group 2"), ("x/\\1", "starting with /"), (5, "string")])
def test_bad_replacement_refused(replacement, message):
    with pytest.raises(ApiError, match=message):
        _api([{"id": "e", "method": "GET", "path_regex": "/p/(.*)", "path_replacement": replacement}])


def test_use_env_value_not_in_messages():
    secret = "s3cr3t-value"
    with pytest.raises(ApiError) as info:
        parse_api({"id": "a", "proxy": {"target_url": "SECRET", "port": "x", "use_env": True},
                   "version_data": {"default": {"endpoints": [{"id": "e", "method": "GET", "path_regex": "/x"}]}}},
                  env={"SECRET": f"ftp://{secret}"})
    assert secret not in str(info.value) and "$SECRET" in str(info.value)
