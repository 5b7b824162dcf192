-- 8: the search index knows each message's room (issue 16).
-- FTS5 cannot filter on another table's column inside the index, so a
-- search had to look up the message of every match, in every room, to keep
-- its room's: 90–140 ms for a word in 30,000 messages of other rooms and
-- none of the searched one. The index now has a second column, `room`,
-- holding one token per message ('r' and the room's id): a search asks for
-- `room : r7 AND text : (...)`, and FTS5 intersects the two lists of
-- entries itself (8–18 ms for that word).
--
-- The table is contentless (content=''): the text stays in `messages` only,
-- as before; FTS5 keeps just its index, and the triggers hand it the text and
-- the room token to add or to delete (a delete must name exactly what was
-- added). Dropping the old table frees its pages, overwritten under
-- secure_delete, so no deleted message's words survive the rebuild.
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
DROP TABLE messages_fts;
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text, room, content='', tokenize='unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts(rowid, text, room)
    SELECT id, text, 'r' || room_id FROM messages WHERE kind = 0 AND deleted_ms IS NULL;
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.kind = 0 AND new.deleted_ms IS NULL BEGIN
    INSERT INTO messages_fts(rowid, text, room) VALUES (new.id, new.text, 'r' || new.room_id);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.kind = 0 AND old.deleted_ms IS NULL BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, room)
        VALUES ('delete', old.id, old.text, 'r' || old.room_id);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, deleted_ms ON messages
WHEN old.kind = 0 BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text, room)
        SELECT 'delete', old.id, old.text, 'r' || old.room_id WHERE old.deleted_ms IS NULL;
    INSERT INTO messages_fts(rowid, text, room)
        SELECT new.id, new.text, 'r' || new.room_id WHERE new.deleted_ms IS NULL;
END;
