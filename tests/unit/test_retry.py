"""The retry decision: one place, asking the layer that raised the error."""

from __future__ import annotations

import random
import sqlite3

import psycopg.errors
import pymysql.err
import pytest
import sqlalchemy as sa

from mpg import backoff, errors
from mpg.db import transactions
from mpg.gateway import retry


def storage_error(driver_error: Exception, kind: type[sa.exc.DBAPIError]) -> errors.StorageError:
    """A StorageError as the database core raises it: the driver error as its cause."""
    with pytest.raises(errors.StorageError) as caught, transactions.mapped_errors("a write"):
        raise kind("UPDATE ...", {}, driver_error)
    return caught.value


def test_server_down_is_transient_and_refusal_is_not() -> None:
    """A refusal will not change by retrying; an outage will."""
    assert retry.is_transient(errors.TransientServerError("down"))
    assert not retry.is_transient(errors.RefusedByServer(403, "forbidden", "no"))
    assert not retry.is_transient(ValueError("bug"))
    assert not retry.is_transient(errors.ValidationError("Subject", "too long"))


def test_a_locked_database_is_transient_and_a_missing_table_is_not() -> None:
    """The worker's decision on a StorageError is the database core's, by its cause."""
    locked = storage_error(sqlite3.OperationalError("database is locked"), sa.exc.OperationalError)
    missing = storage_error(
        sqlite3.OperationalError("no such table: Outbox"), sa.exc.OperationalError
    )
    assert "database is locked" in str(locked)
    assert retry.is_transient(locked)
    assert transactions.is_transient(locked)
    assert not retry.is_transient(missing)
    assert not transactions.is_transient(missing)


def test_a_storage_error_without_a_driver_cause_is_not_transient() -> None:
    """Only a driver's word makes a storage failure worth retrying."""
    assert not retry.is_transient(errors.StorageError("schema check failed"))


@pytest.mark.parametrize(
    "driver_error",
    [
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"),
        pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"),
    ],
    ids=["pg-serialization", "pg-deadlock", "mariadb-deadlock", "mariadb-lock-wait"],
)
def test_a_lost_race_is_both_transient_and_run_again(driver_error: Exception) -> None:
    """Deadlocks and serialization failures: the server reruns, the gateway retries."""
    exc = storage_error(driver_error, sa.exc.OperationalError)
    assert transactions.lost_race(exc)
    assert transactions.is_transient(exc)


def test_a_unique_violation_is_a_lost_race_but_not_transient() -> None:
    """Two processes inserting one key: the loser runs again; a worker would not heal it."""
    exc = storage_error(sqlite3.IntegrityError("UNIQUE constraint failed"), sa.exc.IntegrityError)
    assert transactions.lost_race(exc)
    assert not transactions.is_transient(exc)
    assert not transactions.lost_race(
        storage_error(sqlite3.OperationalError("no such table: X"), sa.exc.OperationalError)
    )


def test_a_lost_connection_is_transient_but_not_a_lost_race() -> None:
    """A dropped connection is retried by the workers; the server does not rerun on it."""
    exc = storage_error(
        psycopg.OperationalError("server closed the connection unexpectedly"),
        sa.exc.OperationalError,
    )
    assert transactions.is_transient(exc)
    assert not transactions.lost_race(exc)


def test_delay_grows_exponentially_and_is_capped() -> None:
    """Each retry waits about twice as long, never over the cap."""
    rng = random.Random(1)
    delays = [backoff.delay(n, max_delay=5.0, rng=rng) for n in range(1, 12)]
    assert delays[0] <= backoff.BASE_DELAY
    assert max(delays) <= 5.0
    assert delays[-1] >= 2.5


def test_attempts_count_from_one() -> None:
    """Attempt 0 is a caller bug."""
    with pytest.raises(ValueError, match="from 1"):
        backoff.delay(0, max_delay=1.0)
