-- Version 1: what every node checks when it starts, and the nodes' incarnations.

-- Deployment facts, as the `meta` table of a redb store: `client_id` (UTF-8) and
-- `k3_fingerprint` (bytes), recorded by the first node and checked by every later one.
CREATE TABLE agentkeys_meta (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);

-- One row per start of a gateway process. Audit chains are kept per (master, incarnation), so
-- nodes never contend for one chain head; a node's rows name the incarnation that wrote them.
CREATE TABLE agentkeys_nodes (
    incarnation bigserial   PRIMARY KEY,
    node_name   text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);
