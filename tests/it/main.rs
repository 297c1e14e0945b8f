//! hookgate's integration tests: one binary that starts the real gateway process and a recording
//! upstream on ephemeral ports (see `harness`).

mod breaker;
mod brokers;
mod cli;
mod conditions;
mod contract;
mod delivery_log;
mod deploy;
mod forwarding;
mod hardening;
mod harness;
mod hostile;
mod idempotency;
mod kafka;
mod limits;
mod observability;
mod operations;
mod ordering;
mod postgres;
mod postgres_groups;
mod presets;
mod promises;
mod providers;
mod queue;
mod redis;
mod replay;
mod schedule;
mod simulation;
mod tracing;
