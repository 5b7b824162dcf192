"""What a search query means, and where its words are in a message.

A query is words, and "quoted phrases"; a message matches when it has every
word and every phrase, in any case (and on SQLite with or without diacritics:
its unicode61 tokenizer removes them; PostgreSQL's "simple" configuration
keeps them, as it needs no extension). Nothing the
user types is ever given to the database as query syntax: the words are taken
out here and each backend quotes them (FTS5 strings, ``websearch_to_tsquery``
phrases), so ``AND``, ``NEAR(``, ``*`` or ``-`` are just words or nothing.
Highlights are computed here, the same way for both backends, as plain
code-point offsets into the text.
"""

from __future__ import annotations

import re
import unicodedata

from protocol import MAX_QUERY_LENGTH, ErrorCode, ProtocolError

MAX_PHRASES = 10
# A word as SQLite's unicode61 tokenizer and PostgreSQL's "simple" parser see
# it, near enough: a run of letters and digits.
_WORD_RE = re.compile(r"[^\W_]+")
_QUOTED_RE = re.compile(r'"([^"]*)"|([^"]+)')


def fold(word: str) -> str:
    """A word as the index keeps it: case-folded, diacritics removed."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def parse_query(query: str) -> list[str]:
    """The phrases of a query (each one or more words, space-separated), or ``invalid_query``."""
    if len(query) > MAX_QUERY_LENGTH:
        raise _invalid(f"A search is at most {MAX_QUERY_LENGTH} characters.")
    if query.count('"') % 2:
        raise _invalid('A quotation mark is not closed: put phrases between two " marks.')
    phrases: list[str] = []
    for quoted, bare in _QUOTED_RE.findall(query):
        if quoted:
            words = _WORD_RE.findall(quoted)
            if words:
                phrases.append(" ".join(w.lower() for w in words))
        else:
            phrases += [w.lower() for w in _WORD_RE.findall(bare)]
    if not phrases:
        raise _invalid("Search for at least one word (letters or digits).")
    if len(phrases) > MAX_PHRASES:
        raise _invalid(f"A search has at most {MAX_PHRASES} words or phrases.")
    return list(dict.fromkeys(phrases))


def highlights(text: str, phrases: list[str]) -> list[tuple[int, int]]:
    """Where the query's phrases are in ``text``: ``[start, end)`` code-point offsets."""
    words = [(m.start(), m.end(), fold(m.group())) for m in _WORD_RE.finditer(text)]
    folded = [w for _, _, w in words]
    spans: set[tuple[int, int]] = set()
    for phrase in phrases:
        wanted = [fold(word) for word in phrase.split(" ")]
        for i in range(len(words) - len(wanted) + 1):
            if folded[i : i + len(wanted)] == wanted:
                spans.add((words[i][0], words[i + len(wanted) - 1][1]))
    return sorted(spans)


def too_slow() -> ProtocolError:
    """The answer to a search the store stopped at its timeout: which words to change."""
    return _invalid(
        "This search took too long and was stopped: add a rarer word, or quote a phrase."
    )


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_QUERY, message)
