"""Developer tools: a local Tansu broker (``rigfast dev-broker``) and a one-event producer (``rigfast produce``)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import uuid

import orjson


def main_dev_broker(argv: list[str]) -> int:
    """Run Tansu (memory storage) on loopback in the foreground, with the source topic created."""
    ap = argparse.ArgumentParser(prog="rigfast dev-broker", description="Local Kafka-compatible broker (Tansu, memory storage)")
    ap.add_argument("--port", type=int, default=9092)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--topic", action="append", help="topic to create (repeatable; default: rig)")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument(
        "--with-gateway", action="store_true",
        help="also run the gateway (python -m rigfast) against this broker; both stop together",
    )
    args = ap.parse_args(argv)
    topics = args.topic or ["rig"]
    gateway: subprocess.Popen | None = None

    from rigfast.kafka.tansu import TansuBroker

    broker = TansuBroker(port=args.port, host=args.host, inherit_output=True)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            broker.start(timeout_s=20)
            broker.create_topics(topics, partitions=args.partitions)
        except (RuntimeError, TimeoutError) as exc:
            print(f"dev-broker: {exc}", file=sys.stderr)
            return 1
        print(f"dev-broker: Kafka API on {broker.bootstrap}, topics {', '.join(topics)} (memory storage; Ctrl-C stops)", flush=True)
        if args.with_gateway and stop["signal"] is None:
            env = dict(os.environ, KAFKA_BROKERS=broker.bootstrap)
            env.setdefault("KAFKA_SOURCE_TOPICS", ",".join(topics))
            gateway = subprocess.Popen([sys.executable, "-m", "rigfast"], env=env, stdin=subprocess.DEVNULL)
        proc = broker.proc
        while stop["signal"] is None and proc.poll() is None and (gateway is None or gateway.poll() is None):
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        return 0 if stop["signal"] is not None else (proc.returncode or 1)
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.terminate()
            try:
                gateway.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(timeout=10)
        broker.stop()
        for s, h in old.items():
            signal.signal(s, h)


def main_produce(argv: list[str]) -> int:
    """Produce one CloudEvent (structured by default, binary with --binary) and print what was sent."""
    ap = argparse.ArgumentParser(prog="rigfast produce", description="Produce one CloudEvent to a Kafka topic")
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--topic", default="rig")
    ap.add_argument("--type", default="com.example.test")
    ap.add_argument("--source", default="/rigfast/produce")
    ap.add_argument("--id", default=None, help="event id (default: a fresh UUID)")
    ap.add_argument("--data", default="{}", help="event data as JSON")
    ap.add_argument("--binary", action="store_true", help="binary mode: attributes in ce_ headers, data as the value")
    args = ap.parse_args(argv)
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError as exc:
        print(f"produce: --data is not valid JSON: {exc}", file=sys.stderr)
        return 2

    from confluent_kafka import Producer

    eid = args.id or str(uuid.uuid4())
    attrs = {"specversion": "1.0", "type": args.type, "source": args.source, "id": eid}
    if args.binary:
        headers = [("content-type", b"application/json")] + [(f"ce_{k}", v.encode()) for k, v in attrs.items()]
        value = orjson.dumps(data)
    else:
        headers = None
        value = orjson.dumps({**attrs, "data": data})
    errors: list = []
    from rigfast.kafka.clients import with_logging

    p = Producer(with_logging({"bootstrap.servers": args.brokers, "message.timeout.ms": 10000}))
    p.produce(args.topic, value, headers=headers, on_delivery=lambda err, msg: err and errors.append(err))
    left = p.flush(15)
    if left or errors:
        print(f"produce: not delivered to {args.brokers} {args.topic}: {errors[0] if errors else 'timeout'}", file=sys.stderr)
        return 1
    if headers:
        print("headers: " + ", ".join(f"{k}={v.decode()}" for k, v in headers))
    print(f"sent to {args.topic}: {value.decode()}")
    return 0
