-- Version 3: short-lived state every node of a deployment must share but that need not survive a crash of
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

-- Logins in progress (SIWE challenges, email and provider logins, pairings) that any node may
-- finish: `id` is the request id, `key` a second name (a nonce, a token or code hash), `owner`
-- the DPoP key thumbprint that started it, `client` its address (IPv6 by /64) — each holds at
-- most `pending_per_client` live entries of a kind on the whole deployment — and `value` what
-- the flow keeps (sealed). Taken (deleted) exactly once by the step that finishes it;
-- expired rows are purged. Emptied by a crash of PostgreSQL: such logins start again.
CREATE UNLOGGED TABLE agentkeys_pending (
    kind       text   NOT NULL,
    id         text   NOT NULL,
    key        bytea  NOT NULL,
    owner      text   NOT NULL,
    client     text   NOT NULL,
    value      bytea  NOT NULL,
    expires_at bigint NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, key)
);
CREATE INDEX agentkeys_pending_expiry ON agentkeys_pending (expires_at);
CREATE INDEX agentkeys_pending_owner ON agentkeys_pending (kind, owner);
CREATE INDEX agentkeys_pending_client ON agentkeys_pending (kind, client);

-- Token buckets every node takes from (per device binding; per client address on the routes
-- without a session that carry a DPoP proof), so a client's rate does not multiply by the
-- number of nodes. `tokens` may fall to -1: a refused request costs at most one token of debt.
-- A bucket idle long enough to be full again carries no information and is purged.
CREATE UNLOGGED TABLE agentkeys_buckets (
    key    text             PRIMARY KEY,
    tokens double precision NOT NULL,
    at_ms  bigint           NOT NULL,
    full_at_ms bigint       NOT NULL
);
CREATE INDEX agentkeys_buckets_full ON agentkeys_buckets (full_at_ms);
