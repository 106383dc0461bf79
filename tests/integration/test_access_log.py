"""RIGFAST_ACCESS_LOG: one structured line per answered request; LOG_LEVEL=debug: connection open/close."""

from __future__ import annotations

import json

import httpx

from tests.conftest import start_gateway
from tests.helpers import T, wait_until


def json_lines(gw) -> list[dict]:
    out = []
    for line in gw.log(200000).splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_access_log_one_json_line_per_request():
    gw = start_gateway(RIGFAST_ACCESS_LOG="1", LOG_FMT="json", LOG_LEVEL="warning")
    try:
        httpx.get(gw.inbound + "/_rig/health", timeout=T)
        httpx.get(gw.inbound + "/_rig/v1/nothing", timeout=T)
        wait_until(lambda: len([x for x in json_lines(gw) if x.get("logger") == "rigfast.access"
                                and x.get("path", "").startswith("/_rig/")]) >= 2, what="both access lines")
        lines = [x for x in json_lines(gw) if x.get("logger") == "rigfast.access" and x["path"].startswith("/_rig/")]
        by_path = {x["path"]: x for x in lines}
        assert by_path["/_rig/health"]["status"] == 200 and by_path["/_rig/health"]["method"] == "GET"
        assert by_path["/_rig/v1/nothing"]["status"] == 404
        assert all(x["level"] == "info" and x["port"] == "inbound" and x["ms"] >= 0 for x in lines)
    finally:
        gw.stop()


def test_no_access_log_by_default_and_connections_at_debug():
    gw = start_gateway(LOG_LEVEL="debug", LOG_FMT="json")
    try:
        with httpx.Client(timeout=T) as c:
            c.get(gw.inbound + "/_rig/health")
        wait_until(lambda: any("connection closed on inbound" in x.get("message", "") for x in json_lines(gw)),
                   what="connection closed at debug")
        lines = json_lines(gw)
        assert any("connection open on inbound" in x.get("message", "") and x["level"] == "debug" for x in lines)
        assert not any(x.get("logger") == "rigfast.access" for x in lines)
    finally:
        gw.stop()
