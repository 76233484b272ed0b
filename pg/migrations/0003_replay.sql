-- Version 3: state every node of a deployment must share but that need not survive a crash of
-- PostgreSQL (UNLOGGED: no WAL, not replicated, emptied after a crash).

-- DPoP proofs seen by any node (RFC 9449 §11.1): `key` is 16 bytes of SHA-256(jti ‖ 0 ‖ jkt),
-- kept until `expires_at` (seconds), after which the proof fails its `iat` check anyway. Nodes
-- refuse proofs issued before they last saw the database (re)start, so losing this table in a
-- crash re-opens no replay.
CREATE UNLOGGED TABLE agentkeys_replay (
    key        bytea  PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX agentkeys_replay_expiry ON agentkeys_replay (expires_at);
