"""The ``rigfast`` command. Every setting is an environment variable and a flag.

``rigfast`` runs the gateway in the foreground; ``rigfast dev-broker`` starts a
local Kafka-protocol broker (Tansu) for trying things out; ``rigfast produce``
sends one CloudEvent to Kafka.
"""

from __future__ import annotations

import argparse
import os
import sys

from rigfast import config

SUBCOMMANDS = ("dev-broker", "produce")


def version() -> str:
    """The installed distribution's version (pyproject.toml), and which engine this install runs."""
    from importlib import metadata

    try:
        v = metadata.version("rigfast")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        v = "unknown"
    from rigfast import _ext

    return f"rigfast {v} (engine: {_ext.BUILD}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rigfast",
        description="rigfast: a fast, RIG-compatible realtime event gateway. "
        "Every flag has an environment variable (shown in brackets); flags win. "
        f"Subcommands: {', '.join(SUBCOMMANDS)} (see 'rigfast SUBCOMMAND --help').",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=version(), help="print the version and exit")
    for s in config.SETTINGS:
        default = s.default
        if isinstance(default, tuple):
            default = ",".join(default)
        if s.attr == "workers":
            default = "number of cores"
        p.add_argument(
            s.flag,
            dest=s.name,
            metavar=s.env,
            default=None,
            help=f"{s.help} [env {s.env}, default: {default!r}]",
        )
    return p


def die_with_parent() -> None:
    """Linux: get SIGTERM when the parent (e.g. `make run`) dies, so stopping make stops the gateway."""
    if os.environ.pop("RIGFAST_DIE_WITH_PARENT", "") != "1" or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    if argv and argv[0] == "dev-broker":
        from rigfast.kafka.tools import main_dev_broker

        return main_dev_broker(argv[1:])
    if argv and argv[0] == "produce":
        from rigfast.kafka.tools import main_produce

        return main_produce(argv[1:])
    args = build_parser().parse_args(argv)
    # flags are parsed like their environment variables
    flag_env = {s.env: getattr(args, s.name) for s in config.SETTINGS if getattr(args, s.name) is not None}
    env = dict(os.environ)
    env.update(flag_env)
    from rigfast.errors import CONFIG_EXIT_CODE, ConfigError
    from rigfast.logs import setup_logging

    try:
        cfg = config.load(env)
        setup_logging(cfg.log_level, cfg.log_fmt)
    except ConfigError as exc:
        print(f"rigfast: configuration error: {exc}", file=sys.stderr)
        return CONFIG_EXIT_CODE
    import logging

    from rigfast.preflight import check_ports, resolve

    try:  # everything that can still fail, checked before any worker starts
        resolved = resolve(cfg)
        if cfg.worker_count == 1:  # not a supervised worker: those share the ports with their siblings
            check_ports(cfg)
    except ConfigError as exc:
        logging.getLogger("rigfast").error("configuration error: %s", exc)  # one line, in LOG_FMT
        return CONFIG_EXIT_CODE
    from rigfast.fdlimit import capacity, raise_nofile

    if os.environ.get("RIGFAST_ROLE") == "reader":  # the node's event reader, started by the supervisor
        from rigfast.cluster.reader import run_reader

        return run_reader(cfg)
    if cfg.workers > 1:
        from rigfast.cluster.supervisor import run_workers

        return run_workers(cfg)
    nofile = raise_nofile()
    if cfg.worker_count == 1:
        logging.getLogger("rigfast").info("open-file limit %d: up to %d connections", nofile, capacity(nofile))
    from rigfast.app import run

    return run(cfg, resolved)


if __name__ == "__main__":
    sys.exit(main())
