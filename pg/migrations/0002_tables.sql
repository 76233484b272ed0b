-- Version 2: the store's tables.

-- Every table of the store (the runtime's actors, children, masters and meta; the ledger's
-- devices, link codes, audit rows, policies, budgets …) as rows of one key-value table. `key`
-- is the order-preserving encoding of the typed key, so `ORDER BY key` is the order redb
-- keeps and a range is a scan of the primary key's index; `native` is the same key in redb's
-- encoding, handed back to the typed layer. Values use redb's encodings.
CREATE TABLE agentkeys_kv (
    tbl    text COLLATE "C" NOT NULL,
    key    bytea            NOT NULL,
    native bytea            NOT NULL,
    value  bytea            NOT NULL,
    PRIMARY KEY (tbl, key)
);
