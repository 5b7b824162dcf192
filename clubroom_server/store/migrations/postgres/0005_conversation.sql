-- 5: conversation state: who is a member of which room (kept across restarts,
-- with the read marker), mentions per user, room owner and topic, bans.
ALTER TABLE rooms ADD COLUMN owner_id BIGINT REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
CREATE TABLE memberships (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_ms BIGINT NOT NULL,
    read_up_to BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships(user_id);
CREATE TABLE mentions (
    message_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, room_id, message_id)
);
CREATE INDEX mentions_by_room ON mentions(room_id);
CREATE TABLE bans (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    PRIMARY KEY (room_id, user_key)
);
-- Who may join a private room besides its members (the owner invited them).
CREATE TABLE invitations (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    by_name TEXT NOT NULL,
    PRIMARY KEY (room_id, user_key)
);
CREATE INDEX invitations_by_user ON invitations(user_key);
