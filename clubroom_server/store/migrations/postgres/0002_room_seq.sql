-- 2: a dense per-room sequence number on every message, and each room's last one.
ALTER TABLE rooms ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE messages SET seq = numbered.seq
FROM (
    SELECT id, row_number() OVER (PARTITION BY room_id ORDER BY id) AS seq FROM messages
) AS numbered
WHERE messages.id = numbered.id;
UPDATE rooms SET last_seq = (
    SELECT COALESCE(MAX(seq), 0) FROM messages WHERE messages.room_id = rooms.id
);
CREATE UNIQUE INDEX messages_by_seq ON messages(room_id, seq);
