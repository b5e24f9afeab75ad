-- New sign-in notices (control/src/notices.rs). Each device cookie an
-- account signed in with (SHA-256 of it with the account, never the
-- cookie) and each network (/24, /48) it came from.
CREATE TABLE known_devices (
    user_id INTEGER NOT NULL REFERENCES users(id),
    device_hash TEXT NOT NULL,
    network TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_hash, network)
);

-- A sign-in from a new device or network, told to the account's owner; the
-- "this wasn't me" link's token is stored as a SHA-256 only.
CREATE TABLE sign_in_notices (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    method TEXT NOT NULL,
    what TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL,
    read_at INTEGER,
    disowned_at INTEGER
);
CREATE INDEX sign_in_notices_user ON sign_in_notices(user_id, created_at);
