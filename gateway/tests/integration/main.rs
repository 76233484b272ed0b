//! The gateway's integration tests, linked into one binary: one test binary per file
//! linked the whole gateway (about 100 MB each in debug) and filled small CI disks.
//! Nextest still runs every test in its own process; select a file's tests with
//! `cargo nextest run -p agentkeys-gateway -E 'test(/^kill9::/)'`.

mod admin;
mod agents;
mod aws;
mod aws_docs;
mod cancellation;
mod cli;
mod codes;
mod common;
mod config;
mod console_api;
mod credentials;
mod daemon;
mod dpop;
mod email;
mod events;
mod hostile;
mod http;
mod identities;
mod kill9;
mod kill9_budgets;
mod login;
mod migrate;
mod nodes;
mod nodes_chaos;
mod oidc;
mod pairing;
mod policies;
mod proxy;
mod rotation;
mod router;
mod secrets;
mod serve;
mod ses;
mod setup_host;
mod standby;
mod store_fixture;
