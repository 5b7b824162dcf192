"""PostgreSQL search: the room's newest messages first, then the older ones the cheaper way.

Which plan is fast depends on how common the words are *in the searched
room*, and the planner knows only how common they are in the whole table. A
word in most messages of other rooms and none of this one looked common, so
the planner walked the room backwards looking for it: every row of a
100,000-message room (270 ms). The search therefore looks first at the
room's newest messages (``WINDOWS``: short backwards walks, whatever the
words), which answer most searches; only if it needs more, it looks at the
older ones, choosing by what the windows showed: a word frequent there is
walked to further back (it soon finds enough), a rare or absent one is
asked of the GIN index on (room_id, search), which holds this room's matches
only. The page's rows are then read by id.

Results are as before: newest first is every match in id order; best first
ranks (``ts_rank``) the room's ``BEST_CANDIDATES`` newest matches, ties
newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg

from clubroom_server.store.records import TABLE_OF, MessageRecord

MESSAGE_COLUMNS = ", ".join(TABLE_OF[MessageRecord].columns)
# The room's newest messages are looked at in these steps, newest first,
# until enough matches are found or the step shows how to go on: a word
# that was common long ago and is absent from the newest thousand messages
# is found in the next step, where the GIN index would read every one of its
# matches (500 ms for a word in 97,000 older messages).
WINDOWS = (1000, 4000)
NEWEST = 2**62  # above every message id
# Older matches are walked to (the room backwards, row by row) when the
# window suggests that takes fewer rows than this; else the GIN index is asked.
WALK_ROWS = 20_000
# Best first ranks the room's BEST_CANDIDATES newest matches: scoring every
# match of a very common word costs too much, and in a chat the best of the
# recent ones is wanted (the same on SQLite).
BEST_CANDIDATES = 1000

# Words through the configuration migration 7 made: 'simple' with accents
# removed, the same on both sides of the match. $2 is the query (phrases
# quoted), $3 its words alone.
_QUERY = "websearch_to_tsquery('clubroom_search', $2) q"
# A match's score: ts_rank best first, 0 newest first (where it is not used).
_RANK = {False: "ts_rank(search, q)", True: "0::real"}
# The window: its oldest id, its size, and its matches (ids, scores) newest first.
WINDOW_SQL = (
    "SELECT min(id), count(*), "
    "coalesce(array_agg(id ORDER BY id DESC) FILTER (WHERE score IS NOT NULL), '{{}}'), "
    "coalesce(array_agg(score ORDER BY id DESC) FILTER (WHERE score IS NOT NULL), '{{}}') "
    "FROM (SELECT id, CASE WHEN kind = 0 AND search @@ q THEN {rank} END AS score "
    f"FROM messages, {_QUERY} WHERE room_id = $1 AND id < $3 ORDER BY id DESC LIMIT $4) AS recent"
)
# Matches older than the windows ($3), newest first: ``{order}`` is ``id`` to
# let the planner walk the room backwards, ``id + 0`` to make it ask the GIN
# index (an expression no index is ordered by). A phrase is also matched as
# its words alone ({words}, $6), which changes no result: the planner thinks
# a phrase as common as its words together and so would walk the room; with
# the words as a second condition it reads the index's candidates and checks
# the phrase on those (tsvector positions are not in the index).
OLDER_SQL = (
    "SELECT coalesce(array_agg(id ORDER BY id DESC), '{{}}'), "
    "coalesce(array_agg(score ORDER BY id DESC), '{{}}') "
    "FROM (SELECT id, {rank} AS score FROM messages, "
    f"{_QUERY}{{words}} "
    "WHERE room_id = $1 AND kind = 0{prefilter} AND search @@ q AND id < $3 "
    "ORDER BY {order} DESC LIMIT $4 OFFSET $5) AS older"
)
_WORDS = ", websearch_to_tsquery('clubroom_search', $6) w"
_PREFILTER = " AND search @@ w"
ROWS_SQL = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1::bigint[])"


class Matches(NamedTuple):
    """Matching ids (and their scores), newest first."""

    ids: list[int]
    scores: list[float]


class Query(NamedTuple):
    """A search's room and words, as the statements take them."""

    room_id: int
    phrases: str  # each phrase quoted, for websearch_to_tsquery
    words: str | None  # each word of them quoted on its own, if there is a phrase

    @classmethod
    def of(cls, room_id: int, phrases: Sequence[str]) -> Query:
        words = [word for phrase in phrases for word in phrase.split(" ")]
        return cls(
            room_id,
            " ".join(f'"{phrase}"' for phrase in phrases),
            " ".join(f'"{word}"' for word in words) if len(words) > len(phrases) else None,
        )


async def search(
    conn: asyncpg.Connection, query: Query, newest: bool, offset: int, limit: int
) -> list[MessageRecord]:
    """Up to ``limit`` matching messages from ``offset`` on, newest or best first."""
    wanted = offset + limit if newest else BEST_CANDIDATES
    recent = await _recent(conn, query, newest, wanted)
    older = Matches([], [])
    if recent.floor is not None and len(recent.matches.ids) < wanted:
        skip = max(0, offset - len(recent.matches.ids)) if newest else 0
        older = await _older(conn, query, newest, recent, wanted, skip)
    if newest:
        page = (recent.matches.ids[offset:] + older.ids)[:limit]
    else:
        page = _best(recent.matches, older)[offset : offset + limit]
    return await _rows(conn, page)


class Recent(NamedTuple):
    """What the windows found: matches, rows looked at, and the oldest id (None: all of them)."""

    matches: Matches
    looked: int
    floor: int | None


async def _recent(conn: asyncpg.Connection, query: Query, newest: bool, wanted: int) -> Recent:
    """The matches among the room's newest messages, window by window (see WINDOWS)."""
    sql = WINDOW_SQL.format(rank=_RANK[newest])
    ids: list[int] = []
    scores: list[float] = []
    floor: int | None = NEWEST
    looked = 0
    for size in WINDOWS:
        oldest, rows, found, ranks = await conn.fetchrow(
            sql, query.room_id, query.phrases, floor, size
        )
        ids += found
        scores += ranks
        looked += rows
        floor = oldest if rows == size else None
        if floor is None or len(ids) >= wanted or _walkable(len(ids), looked, wanted):
            break
    return Recent(Matches(ids, scores), looked, floor)


def _walkable(found: int, looked: int, wanted: int) -> bool:
    """Whether walking further back finds the missing matches within WALK_ROWS rows.

    The walk reads about ``missing / share`` rows, ``share`` being how many
    of the messages looked at matched; the index reads every match in the room.
    """
    share = found / looked if looked else 0
    return share > 0 and (wanted - found) / share <= WALK_ROWS


async def _older(
    conn: asyncpg.Connection, query: Query, newest: bool, recent: Recent, wanted: int, skip: int
) -> Matches:
    """The older matches that make ``wanted`` in all with the recent ones, ``skip`` left out."""
    found = len(recent.matches.ids)
    order = "id" if _walkable(found, recent.looked, wanted) else "id + 0"
    phrase = query.words is not None
    sql = OLDER_SQL.format(
        rank=_RANK[newest],
        words=_WORDS if phrase else "",
        prefilter=_PREFILTER if phrase else "",
        order=order,
    )
    extra = [query.words] if phrase else []
    args = (query.room_id, query.phrases, recent.floor, wanted - found - skip, skip, *extra)
    ids, scores = await conn.fetchrow(sql, *args)
    return Matches(list(ids), list(scores))


def _best(*parts: Matches) -> list[int]:
    """The candidates' ids, best score first, ties newest first."""
    ranked = sorted(
        ((score, id_) for part in parts for id_, score in zip(part.ids, part.scores, strict=True)),
        reverse=True,
    )
    return [id_ for _, id_ in ranked]


async def _rows(conn: asyncpg.Connection, ids: list[int]) -> list[MessageRecord]:
    """The messages of ``ids``, in that order."""
    if not ids:
        return []
    found: dict[int, Any] = {row[0]: row for row in await conn.fetch(ROWS_SQL, ids)}
    return [MessageRecord(*found[id_]) for id_ in ids if id_ in found]
