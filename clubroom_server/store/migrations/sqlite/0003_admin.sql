-- 3: administrators, and the admin actions running servers apply.
-- An account is disabled by a '!' in front of its password hash (as passwd -l
-- does), and deleted by replacing the hash with '!deleted': no new column on
-- users, and `copy` carries both along with the hash.
CREATE TABLE admins (
    user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    granted_ms INTEGER NOT NULL
);
-- What `clubroom-server users disable`, `rooms delete` and friends did, for
-- every running server to apply to its connections within half a second.
CREATE TABLE admin_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    user_id INTEGER,
    room_id INTEGER,
    room_name TEXT
);
