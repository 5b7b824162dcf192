-- 7: search folds accents ("cafe" finds "Café", as SQLite's unicode61 does)
-- and the room filter and the word match use one index (issue 16).
--
-- unaccent and btree_gin ship with PostgreSQL (contrib; Debian:
-- postgresql-contrib) and are trusted extensions: since PostgreSQL 13 any
-- role with CREATE on the database may create them. If this fails, the
-- server stops with a sentence saying so (see postgres._migration_error).
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS btree_gin;
-- A text search configuration: 'simple' (lower case, no stemming, no stop
-- words) with accents removed first. Words of ASCII letters need no folding.
-- The unaccent dictionary is named with its schema, wherever the extension
-- was installed (another Clubroom schema in this database may have made it).
CREATE TEXT SEARCH CONFIGURATION clubroom_search (COPY = pg_catalog.simple);
DO $$
BEGIN
    EXECUTE format(
        'ALTER TEXT SEARCH CONFIGURATION clubroom_search '
        'ALTER MAPPING FOR hword, hword_part, word WITH %s.unaccent, pg_catalog.simple',
        (SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'unaccent')
    );
END
$$;
-- A generated column's expression cannot be changed in place before
-- PostgreSQL 17: the column is made again (the table is rewritten once).
DROP INDEX messages_search;
ALTER TABLE messages DROP COLUMN search;
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('clubroom_search'::regconfig, CASE WHEN kind = 0 AND deleted_ms IS NULL THEN text ELSE '' END)
) STORED;
-- (room_id, search): the room and the words can be matched in one index.
-- New entries wait in the index's pending list, which every search reads
-- through: at the default 4 MB that took a rare word's search from 1 ms to
-- 20–35 ms after 20,000 sends; 256 kB keeps it short (and its flush, done by
-- the insert that fills it, small).
CREATE INDEX messages_search ON messages USING GIN (room_id, search)
    WITH (gin_pending_list_limit = 256);
