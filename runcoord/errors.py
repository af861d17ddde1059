"""One exception base for runcoord, with retriable and fatal kept apart.

Every retry decision in the code base asks one question: ``isinstance(exc, Retriable)``.
Driver errors (librdkafka, psycopg, httpx, redis) are translated into these at the adapter
boundary, so the domain and the loops never import a driver's exception type.
"""

from __future__ import annotations


class RuncoordError(Exception):
    """Base of every error runcoord raises on purpose."""


class Retriable(RuncoordError):
    """The operation may succeed if tried again (after backing off)."""


class Fatal(RuncoordError):
    """Trying again cannot help; the process (or this client) must stop or be rebuilt."""


class ConfigError(Fatal):
    """Configuration is missing or wrong; the message says which setting and why."""


class StackError(Fatal):
    """A component of the local stack could not be started, found, or stopped."""


class SerializationError(RuncoordError):
    """A message could not be encoded or decoded; consumers dead-letter it with the reason."""


class UnknownSchemaError(SerializationError):
    """The message names a writer schema (fingerprint or id) that this process does not know."""


class KafkaRetriable(Retriable):
    """A Kafka operation failed in a way the client expects to recover from."""


class KafkaFatal(Fatal):
    """A Kafka client is unusable (fenced producer, fatal error): rebuild it or stop."""


class Fenced(KafkaFatal):
    """A newer instance owns our transactional id or our group generation: we are a zombie."""
