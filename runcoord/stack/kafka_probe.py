"""Is the Kafka cluster usable? Asked the way clients will use it: metadata, then transactions.

Each probe returns None when the answer is yes, or a short reason; they never raise, so
they fit :func:`runcoord.stack.polling.wait_until`.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from runcoord.kafka import producer_config

# Probes poll a broker that may not be listening yet; librdkafka would log every refused
# connection to stderr. Level 0 keeps `runcoord stack up` readable; reasons come back to us.
_QUIET: dict[str, str | int] = {"log_level": 0}

# A fixed id: each probe fences the previous probe's producer, so none accumulate.
HEALTH_TRANSACTIONAL_ID = "runcoord-stack-health"


def _reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def missing_brokers(bootstrap: str, expected: Iterable[int], *, timeout: float = 3.0) -> str | None:
    """None when the cluster's metadata lists every broker id in ``expected``."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **_QUIET})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return f"no metadata from {bootstrap}: {_reason(exc)}"
    missing = sorted(set(expected) - set(metadata.brokers))
    if missing:
        return f"brokers {missing} not in the cluster metadata yet"
    return None


def answers_metadata(bootstrap: str, *, timeout: float = 3.0) -> str | None:
    """None when some broker behind ``bootstrap`` answers a metadata request."""
    return missing_brokers(bootstrap, (), timeout=timeout)


def transactions_unready(bootstrap: str, *, timeout: float = 10.0) -> str | None:
    """None when a transactional producer can init_transactions (the coordinator is ready)."""
    producer = Producer(
        producer_config(bootstrap, transactional_id=HEALTH_TRANSACTIONAL_ID, log_level=0)
    )
    try:
        producer.init_transactions(timeout)
    except KafkaException as exc:
        return f"init_transactions failed: {_reason(exc)}"
    finally:
        producer.close()
    return None
