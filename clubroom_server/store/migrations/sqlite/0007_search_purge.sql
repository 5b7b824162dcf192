-- 7: a deleted message's words leave the FTS5 index in the background (issue 16).
-- SQLite 3.40 has no FTS5 'secure-delete': a deletion only adds a marker to
-- the index, and the words stay in its older segments until a merge rewrites
-- them. Deletions count themselves here in their own transaction; the store
-- merges the whole index in small steps soon after, and subtracts what it
-- covered, so a purge cut short by a crash is done again at the next start.
CREATE TABLE search_purge (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pending INTEGER NOT NULL
);
INSERT INTO search_purge (id, pending) VALUES (1, 1);
