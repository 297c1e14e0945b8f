//! hookgate: a webhook gateway on Pingora that admits only clean deliveries.
//!
//! The request's path, in order: `pipeline` (route → method → address → transport → size →
//! signature → parse → schema → events → idempotency key), then `store` (claim), then
//! `server::forward` (exact bytes upstream). `config` compiles the YAML once; `server` is the
//! only module that knows Pingora.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod rejection;
pub mod server;
pub mod signature;
pub mod store;
