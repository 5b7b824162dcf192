"""What both backends' group-commit writers share: settling a committed batch.

A batch is a list of queued writes, each with the future its caller awaits
and an optional ``on_stored`` callback. After the commit, callbacks run first,
in queue order (commit order), then the futures resolve: so whatever a
callback announces goes out before any caller of the batch resumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from clubroom_server.metrics import COMMIT_BATCH, COMMIT_FAILED_ERROR, COMMIT_FAILED_UNAVAILABLE
from clubroom_server.store.interface import (
    DuplicateError,
    NotFoundError,
    StoreError,
    UnavailableError,
)

log = logging.getLogger(__name__)


class QueuedWrite(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...

    @property
    def on_stored(self) -> Callable[[Any], None] | None: ...


class Refused(NamedTuple):
    """One write of a batch that a rule refused; the rest of the batch still commits."""

    error: StoreError


class Failed(NamedTuple):
    """One write of a batch that could not be stored at all (its own commit failed)."""

    error: StoreError


def settle(batch: Sequence[QueuedWrite], results: Sequence[Any]) -> None:
    """Announce committed writes in order, then wake whoever awaits them.

    A ``Failed`` result is answered (and counted) as ``fail_all`` would.
    """
    COMMIT_BATCH.observe(len(batch))
    for write, result in zip(batch, results, strict=True):
        if write.on_stored is not None and not isinstance(result, Refused | Failed):
            try:
                write.on_stored(result)
            except Exception:  # an announcement must never undo a commit
                log.exception("post-commit callback failed")
    for write, result in zip(batch, results, strict=True):
        if isinstance(result, Failed):
            fail_all([write], result.error)
        elif write.future.done():
            continue
        elif isinstance(result, Refused):
            write.future.set_exception(result.error)
        else:
            write.future.set_result(result)


def fail_all(batch: Sequence[QueuedWrite], error: StoreError) -> None:
    """Nothing of the batch was stored: every caller gets ``error``.

    A failed commit is counted for the metrics, except a write a rule refused
    (a taken name, a room deleted meanwhile), which is the database working.
    """
    if isinstance(error, UnavailableError):
        COMMIT_FAILED_UNAVAILABLE.inc()
    elif not isinstance(error, DuplicateError | NotFoundError):
        COMMIT_FAILED_ERROR.inc()
    for write in batch:
        if not write.future.done():
            write.future.set_exception(error)


def by_type(records: Sequence[object]) -> dict[type, list[object]]:
    """Records grouped by their type, first-seen order kept (for ``load``)."""
    groups: dict[type, list[object]] = {}
    for record in records:
        groups.setdefault(type(record), []).append(record)
    return groups
