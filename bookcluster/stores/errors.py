"""The one error table of store access: which exceptions mean a store did not answer.

A Redis or PostgreSQL call that raises one of these may or may not have taken effect;
callers (`seats/home.py`, the loops, the catalog) turn them into `RegionUnavailable`
(HTTP 503) with an honest `outcome`, never into a guess.
"""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

PG_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
)
# The server gave up on the transaction and rolled it back; the reason by SQLSTATE
# (57014 is mostly `statement_timeout`, also an operator's pg_cancel_backend).
PG_ABORTED = (asyncpg.DeadlockDetectedError, asyncpg.LockNotAvailableError,
              asyncpg.QueryCanceledError)
ABORT_REASONS = {"40P01": "deadlock", "55P03": "lock_timeout", "57014": "statement_canceled"}
REDIS_UNAVAILABLE = (OSError, asyncio.TimeoutError, aioredis.ConnectionError,
                     aioredis.TimeoutError)
