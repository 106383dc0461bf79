"""The servers the peer benchmark measures: rigfast, nginx + nchan, Pushpin (with a GRIP origin).

Each is a child process (or a tree: nginx master + worker, Pushpin's runner and its services)
started in its own session, pinned to the server cores, and stopped by the PIDs recorded here.
Configuration files and logs go to a private directory under ``$OUT``. Everything listens on
127.0.0.1 only.

``python bench/peers/servers.py grip-origin PORT`` runs the tiny GRIP origin Pushpin proxies
new connections to (``Grip-Hold: stream`` for SSE, WebSocket-over-HTTP for WebSocket).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import revtree  # noqa: E402

ADDRESSED_EXTRACTORS = json.dumps(
    {"bench.addressed": {"name": {"stable_field_index": 1, "event": {"json_pointer": "/data/name"}}}}
)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_s(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return False
    except OSError:
        return True


class Child:
    """A process we started; stop() ends it and whatever it spawned, by PID."""

    def __init__(self, argv: list[str], cpus: str, log: str, env: dict | None = None, cwd: str | None = None):
        cmd = (["taskset", "-c", cpus] if cpus else []) + argv
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd, start_new_session=True)
        self.known: set[int] = {self.proc.pid}

    def pids(self) -> list[int]:
        live = tree(self.proc.pid)
        self.known.update(live)
        return live

    def stop(self, timeout: float = 15.0) -> None:
        self.pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        for p in sorted(self.known):
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.log.close()


class Server:
    name = ""
    sub_port = pub_port = 0

    def __init__(self, cpus: str, out: str):
        self.cpus = cpus
        self.dir = os.path.join(out, self.name)
        self.children: list[Child] = []

    def measured(self) -> list[int]:
        """PIDs whose CPU and memory count as the server's."""
        return self.children[-1].pids() if self.children else []

    def stop(self) -> None:
        for c in reversed(self.children):
            c.stop()
        self.children = []

    def _fresh_dir(self) -> None:
        for port in {self.sub_port, self.pub_port, getattr(self, "api_port", 0), getattr(self, "origin_port", 0)} - {0}:
            if not port_free(port):
                raise RuntimeError(f"{self.name}: 127.0.0.1:{port} is taken (another instance?): not measuring it")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)


class Rigfast(Server):
    name = "rig"

    def __init__(self, cpus: str, out: str, port: int = 0, api_port: int = 0, python: str = sys.executable,
                 name: str = "rig", tree: str = REPO):
        self.name = name  # "rig@REV": the gateway of another revision, run from its own tree (bench/revtree.py)
        super().__init__(cpus, out)
        self.sub_port = self.pub_port = port or free_port()
        self.api_port = api_port or free_port()
        self.python = python
        self.tree = tree

    def start(self) -> None:
        self._fresh_dir()
        env = dict(os.environ) if self.tree == REPO else revtree.env(self.tree)
        env.update({
            "EXTRACTORS": ADDRESSED_EXTRACTORS, "RIGFAST_WORKERS": "1", "LOG_LEVEL": "warning",
            "RIGFAST_HOST": "127.0.0.1", "RIGFAST_API_HOST": "127.0.0.1", "INBOUND_PORT": str(self.sub_port),
            "API_HTTP_PORT": str(self.api_port), "MAX_CONNECTIONS_PER_MINUTE": "100000000",
        })
        c = Child([self.python, "-m", "rigfast"], self.cpus, os.path.join(self.dir, "rigfast.log"), env=env,
                  cwd=self.tree)
        self.children.append(c)
        wait_port(self.api_port, c.proc)
        wait_port(self.sub_port, c.proc)


NGINX_CONF = """\
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
daemon off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {conns}; use epoll; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    nchan_shared_memory_size 256M;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        # no history, like rigfast's default subscriber: only connected subscribers get a message
        location ~ ^/pub/(\\w+)$ {{ nchan_publisher; nchan_channel_id $1; nchan_message_buffer_length 0; }}
        location ~ ^/sub/(\\w+)$ {{ nchan_subscriber; nchan_channel_id $1;
                                  nchan_subscriber_first_message newest; nchan_subscriber_timeout 0; }}
    }}
}}
"""


class Nchan(Server):
    name = "nchan"

    def __init__(self, cpus: str, out: str, port: int = 18080):
        super().__init__(cpus, out)
        self.sub_port = self.pub_port = port

    def start(self) -> None:
        self._fresh_dir()
        nofile = raise_nofile()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as fh:
            fh.write(NGINX_CONF.format(nofile=nofile, conns=nofile - 100, dir=self.dir, port=self.sub_port))
        c = Child(["nginx", "-p", self.dir, "-c", conf, "-e", os.path.join(self.dir, "error.log")], self.cpus,
                  os.path.join(self.dir, "stdout.log"))
        self.children.append(c)
        wait_port(self.sub_port, c.proc)
        time.sleep(0.3)  # the worker process forks after the master listens


PUSHPIN_CONF = """\
[global]
include={{libdir}}/internal.conf
rundir={dir}/run
ipc_prefix=rfpb-
port_offset=0
[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:{port}
logdir={dir}/log
log_level=1
client_buffer_size=8192
client_maxconn={maxconn}
condure_bin=condure
zurl_bin=zurl
[proxy]
zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in
zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream
zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out
routesfile={dir}/routes
auto_cross_origin=false
sig_iss=pushpin
sig_key=changeme
updates_check=off
[handler]
push_in_spec=tcp://127.0.0.1:{zmq}
push_in_sub_specs=tcp://127.0.0.1:{zmq2}
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port={pub_port}
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=tcp://127.0.0.1:{zmq3}
# Debian's defaults (2,500 deliveries/s, 25,000 queued) would measure the policy, not the engine
message_rate=10000000
message_hwm=10000000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
"""


class Pushpin(Server):
    name = "pushpin"

    def __init__(self, cpus: str, out: str, port: int = 17999, pub_port: int = 15561, origin_port: int = 17998,
                 zmq: int = 15560):
        super().__init__(cpus, out)
        self.sub_port, self.pub_port, self.origin_port, self.zmq = port, pub_port, origin_port, zmq

    def start(self) -> None:
        self._fresh_dir()
        os.makedirs(os.path.join(self.dir, "run"))
        os.makedirs(os.path.join(self.dir, "log"))
        nofile = raise_nofile()
        conf = os.path.join(self.dir, "pushpin.conf")
        with open(conf, "w") as fh:
            fh.write(PUSHPIN_CONF.format(dir=self.dir, port=self.sub_port, pub_port=self.pub_port,
                                         maxconn=nofile - 100, zmq=self.zmq, zmq2=self.zmq + 2, zmq3=self.zmq + 3))
        with open(os.path.join(self.dir, "routes"), "w") as fh:
            fh.write(f"* 127.0.0.1:{self.origin_port},over_http\n")
        origin = Child([sys.executable, os.path.abspath(__file__), "grip-origin", str(self.origin_port)], self.cpus,
                       os.path.join(self.dir, "origin.log"))
        self.children.append(origin)
        wait_port(self.origin_port, origin.proc)
        c = Child(["pushpin", "--config", conf, "--merge-output"], self.cpus, os.path.join(self.dir, "pushpin.log"),
                  cwd=self.dir)
        self.children.append(c)
        wait_port(self.sub_port, c.proc)
        wait_port(self.pub_port, c.proc)
        time.sleep(0.5)


def make(name: str, cpus: str, out: str, python: str, trees: dict[str, str] | None = None) -> Server:
    """``rig@REV`` runs revision REV from ``trees[REV]``, or from a tree bench/revtree.py makes for it."""
    if name == "rig":
        return Rigfast(cpus, out, python=python)
    if name.startswith("rig@"):
        rev = name[4:]
        tree = (trees or {}).get(rev) or revtree.tree(rev, python)
        return Rigfast(cpus, out, python=python, name=name, tree=tree)
    if name == "nchan":
        return Nchan(cpus, out)
    if name == "pushpin":
        return Pushpin(cpus, out)
    raise SystemExit(f"unknown server {name!r}: rig, rig@REV, nchan or pushpin")


# -- the GRIP origin for Pushpin ------------------------------------------------------------------

def _answer(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class GripOrigin(asyncio.Protocol):
    """GET /sse/<channel>: hold the stream on <channel>. POST /ws/<channel> (WebSocket-over-HTTP):
    accept the socket and subscribe it to <channel>."""

    def connection_made(self, transport) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            method, path = lines[0].split(" ")[:2]
            parts = path.split("?")[0].strip("/").split("/")
            channel = parts[1] if len(parts) > 1 else "bench"
            if parts[0] == "sse":
                self.t.write(_answer("200 OK", [("Content-Type", "text/event-stream"), ("Grip-Hold", "stream"),
                                                ("Grip-Channel", channel)], b":ok\n\n"))
            elif parts[0] == "ws" and method == "POST":
                out = b""
                if body.startswith(b"OPEN"):
                    ctl = b"c:" + json.dumps({"type": "subscribe", "channel": channel}).encode()
                    out = b"OPEN\r\nTEXT %x\r\n%s\r\n" % (len(ctl), ctl)
                elif b"CLOSE" in body:
                    out = b"CLOSE\r\n"
                self.t.write(_answer("200 OK", [("Content-Type", "application/websocket-events"),
                                                ("Sec-WebSocket-Extensions", "grip")], out))
            else:
                self.t.write(_answer("404 Not Found", [], b"no\n"))


def grip_origin(port: int) -> None:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(GripOrigin, "127.0.0.1", port, backlog=8192))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "grip-origin":
        grip_origin(int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
