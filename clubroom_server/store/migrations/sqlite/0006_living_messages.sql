-- 6: messages that live (issue 16): edits, deletions, reactions, replies, search.
-- A change (edit, deletion, reaction) is itself a row of `messages` with its
-- own id and the room's next seq (kind > 0, no text, target_id = the message
-- changed): so a change is ordered with the room's messages, and a client
-- that resumes with `after` is told about it. kind: 0 message, 1 edit,
-- 2 deletion, 3 reaction added, 4 reaction removed.
ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN target_id INTEGER;
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
ALTER TABLE messages ADD COLUMN deleted_ms INTEGER;
CREATE TABLE reactions (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX reactions_once ON reactions(message_id, user_id, emoji);
-- Full-text search: an external-content FTS5 index over the text of live
-- messages, kept in step by triggers (the text is stored once, in messages).
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
INSERT INTO messages_fts(rowid, text) SELECT id, text FROM messages WHERE kind = 0;
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.kind = 0 AND new.deleted_ms IS NULL BEGIN
    INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.kind = 0 AND old.deleted_ms IS NULL BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, deleted_ms ON messages
WHEN old.kind = 0 BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text)
        SELECT 'delete', old.id, old.text WHERE old.deleted_ms IS NULL;
    INSERT INTO messages_fts(rowid, text)
        SELECT new.id, new.text WHERE new.deleted_ms IS NULL;
END;
