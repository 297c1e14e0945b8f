//! hookgate: a webhook gateway on Pingora that admits only clean deliveries.
//!
//! The request's path, in order: `pipeline` (route → method → address → transport → size →
//! signature present → signature → parse → schema → events → idempotency key), then either
//! `store` (claim) and `server::forward` (exact bytes upstream), or, on queue routes, one durable
//! write to the store's queue and background delivery with `schedule`'s retries. `config`
//! compiles the YAML once; `server` (and the `cli`'s `send`, which reuses its connector) are
//! the modules that know Pingora.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod destination;
pub mod exchange;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod rate_limit;
pub mod rejection;
pub mod schedule;
pub mod server;
pub mod signature;
pub mod spans;
pub mod store;
pub mod tls_roots;
pub mod trace;
pub mod urlencoded;
