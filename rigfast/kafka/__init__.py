"""Kafka: librdkafka clients (clients.py), the Tansu launcher (tansu.py), developer commands (tools.py)."""
