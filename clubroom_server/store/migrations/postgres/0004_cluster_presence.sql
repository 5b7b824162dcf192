-- 3: presence for a cluster: which user is in which room through which node,
-- and each node's lease. Rows of a node whose lease ran out are treated as
-- dropped connections: after the grace period they leave (see presence.py).
CREATE TABLE cluster_nodes (
    id TEXT PRIMARY KEY,
    lease_until_ms BIGINT NOT NULL
);
CREATE TABLE presence (
    room_id BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    user_key TEXT NOT NULL,
    node_id TEXT NOT NULL,
    username TEXT NOT NULL,
    -- NULL while the node holds a connection of the user in the room;
    -- a deadline once they are gone and the row only waits out the grace.
    grace_until_ms BIGINT,
    PRIMARY KEY (room_id, user_key, node_id)
);
CREATE INDEX presence_by_node ON presence(node_id);
