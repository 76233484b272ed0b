//! The AgentKeys gateway: HTTP API, process setup and the `agentkeys` command.
//!
//! Only this crate knows HTTP, the CLI and process setup; it drives the runtime and actors.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod http;
pub mod keys;
pub mod keystore;
pub mod mail;
pub mod migrate;
pub mod notify;
pub mod openid;
pub mod rotation;
pub mod serve;
