"""Kafka plumbing over aiokafka: producer, consumer loop, DLQ, topic admin.

Exceptions a handler may raise, and what the consumer loop does with them::

    InvalidMessage            -> straight to the DLQ, never retried
    transient (see errors.is_transient: broker, DB connection, deadlock)
                              -> partition paused, retried with backoff until it works
    anything else             -> retried `max_attempts` times, then to the DLQ
"""

from shared.kafka.consumer import ConsumerLoop, ConsumerSpec, JointHandler, Record
from shared.kafka.errors import InvalidMessage, is_transient
from shared.kafka.producer import create_producer, publish

__all__ = [
    "ConsumerLoop",
    "ConsumerSpec",
    "InvalidMessage",
    "JointHandler",
    "Record",
    "create_producer",
    "is_transient",
    "publish",
]
