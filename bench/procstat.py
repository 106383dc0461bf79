"""CPU seconds of a process (utime + stime from /proc), for the benchmark scripts."""

from __future__ import annotations

import os


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
