"""Workers on one node and nodes over Kafka: see :mod:`rigfast.cluster.node` and docs/cluster.md."""
