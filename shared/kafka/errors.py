"""Which failures are the message's fault and which are the world's."""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka import errors as kafka_errors
from sqlalchemy import exc as sa_exc


class InvalidMessage(Exception):
    """The message can never be handled (bad shape, unknown version): dead-letter it."""


class DependencyUnavailable(Exception):
    """Postgres or Kafka cannot be reached right now; HTTP answers 503 + Retry-After."""


_TRANSIENT_PG = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
)
_TRANSIENT_KAFKA = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.NotEnoughReplicasError,
    kafka_errors.UnknownTopicOrPartitionError,
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying later may succeed: connectivity, overload, lock conflicts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DependencyUnavailable | ConnectionError | TimeoutError):
            return True
        if isinstance(current, asyncio.TimeoutError | OSError):
            return True
        if isinstance(current, _TRANSIENT_PG + _TRANSIENT_KAFKA):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa_exc.OperationalError | sa_exc.InterfaceError):
            return True
        if isinstance(current, sa_exc.TimeoutError):  # pool exhausted
            return True
        current = current.__cause__ or current.__context__
    return False
