"""The local stack: Apache Kafka (KRaft) from Maven Central jars, PostgreSQL, Redis.

``runcoord stack …`` drives it; fault tests use :class:`KafkaCluster` directly to stop,
kill and restart single brokers, and :func:`wait_until` to wait on conditions.
"""

from runcoord.stack.component import ComponentStatus
from runcoord.stack.kafka_broker import KafkaCluster
from runcoord.stack.orchestrate import down, status, up
from runcoord.stack.polling import Deadline, NotReadyInTime, wait_until

__all__ = [
    "ComponentStatus",
    "Deadline",
    "KafkaCluster",
    "NotReadyInTime",
    "down",
    "status",
    "up",
    "wait_until",
]
