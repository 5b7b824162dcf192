-- 5: conversation state: who is a member of which room (kept across restarts,
-- with the read marker), mentions per user, room owner and topic, bans.
ALTER TABLE rooms ADD COLUMN owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
CREATE TABLE memberships (
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_ms INTEGER NOT NULL,
    read_up_to INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX memberships_by_user ON memberships(user_id);
CREATE TABLE mentions (
    message_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, room_id, message_id)
) WITHOUT ROWID;
CREATE INDEX mentions_by_room ON mentions(room_id);
CREATE TABLE bans (
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    username TEXT NOT NULL,
    PRIMARY KEY (room_id, user_key)
) WITHOUT ROWID;
-- Who may join a private room besides its members (the owner invited them).
CREATE TABLE invitations (
    room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    by_name TEXT NOT NULL,
    PRIMARY KEY (room_id, user_key)
);
CREATE INDEX invitations_by_user ON invitations(user_key);
