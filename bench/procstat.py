"""Process and kernel figures from /proc for the benchmark scripts: CPU seconds, memory, a node's process tree."""

from __future__ import annotations

import os


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tick, int(f[12]) / tick


def proc_cpu_s(pid: int) -> float:
    return sum(proc_cpu_split(pid))


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each of ``pids`` still alive."""
    out = {}
    for p in pids:
        try:
            out[p] = proc_cpu_s(p)
        except OSError:
            pass
    return out


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out = [pid]
    for c in children(pid):
        out.extend(tree(c))
    return out


def role(pid: int) -> str:
    """What a process of a rigfast node is: ``supervisor``, ``reader`` or ``w<index>`` (a worker)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return "?"
    if b"RIGFAST_ROLE=reader" in env:
        return "reader"
    if any(e.startswith(b"RIGFAST_WORKER_COUNT=") for e in env):
        index = [e for e in env if e.startswith(b"RIGFAST_WORKER_INDEX=")]
        return "w" + index[0].split(b"=", 1)[1].decode() if index else "w?"
    return "supervisor"


def memory_kb(pid: int) -> dict[str, int]:
    """``rss`` and ``pss`` (kB) of a process; zeros if it is gone."""
    out = {"rss": 0, "pss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    out["rss"] = int(line.split()[1])
                elif line.startswith("Pss:"):
                    out["pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


def meminfo_kb() -> dict[str, int]:
    """/proc/meminfo, kB."""
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, rest = line.split(":", 1)
            out[name] = int(rest.split()[0])
    return out


def sockstat() -> dict[str, int]:
    """/proc/net/sockstat's TCP line (``inuse``, ``orphan``, ``tw``, ``alloc``, ``mem`` in pages) and ``sockets_used``."""
    out = {}
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("sockets:"):
                out["sockets_used"] = int(line.split()[2])
            elif line.startswith("TCP:"):
                f = line.split()[1:]
                out.update({f[i]: int(f[i + 1]) for i in range(0, len(f), 2)})
    return out


def slabinfo_kb() -> dict[str, int]:
    """Memory of each slab cache (kB: objects x object size), or {} if /proc/slabinfo is not readable."""
    out = {}
    try:
        with open("/proc/slabinfo") as fh:
            for line in fh:
                if line.startswith(("slabinfo", "#")):
                    continue
                f = line.split()
                out[f[0]] = int(f[2]) * int(f[3]) // 1024  # num_objs x objsize
    except OSError:
        pass
    return out


def tcp_counters() -> dict[str, int]:
    """The kernel's TCP counters (what ``nstat -az`` shows: /proc/net/snmp ``Tcp`` and /proc/net/netstat ``TcpExt``)."""
    out = {}
    for path, prefixes in (("/proc/net/snmp", ("Tcp:",)), ("/proc/net/netstat", ("TcpExt:",))):
        with open(path) as fh:
            lines = [line.split() for line in fh if line.startswith(prefixes)]
        for names, values in zip(lines[::2], lines[1::2]):
            kind = names[0].rstrip(":")
            out.update({kind + n: int(v) for n, v in zip(names[1:], values[1:]) if v.lstrip("-").isdigit()})
    return out


def sysctl(name: str) -> str:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as fh:
            return " ".join(fh.read().split())
    except OSError:
        return "-"
