"""Reverse proxy across workers and nodes: /v3/apis changes reach everyone, /v3/responses reaches the waiting worker."""

from __future__ import annotations

import contextlib
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.helpers import T, uid, wait_until


def definition(api_id: str, port: int, **ep) -> dict:
    return {"id": api_id, "proxy": {"target_url": "127.0.0.1", "port": port},
            "version_data": {"default": {"endpoints": [{"id": "e", "method": "POST", "path_regex": f"/{api_id}", **ep}]}}}


def everywhere(nodes, api_id: str, status: int) -> bool:
    """Whether every worker of every node answers GET /v3/apis/{id} with `status`."""
    for node in nodes:
        for w in range(node.workers):
            with contextlib.closing(node.pinned(w)) as c:
                if c.get(f"/v3/apis/{api_id}").status_code != status:
                    return False
    return True


@pytest.fixture
def async_upstream():
    """An upstream answering 202 and handing over each request's rig-correlation."""
    corrs: "queue.Queue[str]" = queue.Queue()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            self.rfile.read(n)
            corrs.put(self.headers.get("rig-correlation", ""))
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1], corrs
    server.shutdown()
    server.server_close()
    t.join(T)


def test_apis_changes_reach_every_worker_and_node(two_nodes):
    """An API added on one worker of one node is routed by every worker of both nodes; a delete elsewhere removes it everywhere."""
    na, nb = two_nodes
    aid = uid("capi")
    with contextlib.closing(na.pinned(0)) as c:
        assert c.post("/v3/apis", json=definition(aid, 9)).status_code == 201
    wait_until(lambda: everywhere(two_nodes, aid, 200), timeout=3 * T, what="the API on every worker")
    with contextlib.closing(nb.pinned(1)) as c:
        assert c.delete(f"/v3/apis/{aid}").status_code == 204
    wait_until(lambda: everywhere(two_nodes, aid, 404), timeout=3 * T, what="the API gone from every worker")


def test_http_async_answer_on_another_node(two_nodes, async_upstream):
    """A /v3/responses call on the other node reaches the worker holding the client's request."""
    na, nb = two_nodes
    port, corrs = async_upstream
    aid = uid("casync")
    with contextlib.closing(na.pinned(1)) as c:
        assert c.post("/v3/apis", json=definition(aid, port, response_from="http_async")).status_code == 201
    wait_until(lambda: everywhere([na], aid, 200), timeout=3 * T, what="the API on na's workers")
    for i in range(2):
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(na.inbound + f"/{aid}", content=b"{}", timeout=3 * T)))
        t.start()
        corr = corrs.get(timeout=T)
        assert corr.startswith("na.w")
        with contextlib.closing(nb.pinned(i % 2)) as c:
            r = c.post("/v3/responses", content=f"answer {i}".encode(), headers={"rig-correlation": corr, "rig-response-code": "201"})
        assert r.status_code == 202, r.text
        t.join(3 * T)
        assert result["r"].status_code == 201 and result["r"].text == f"answer {i}"
