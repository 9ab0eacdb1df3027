//! Black-box tests of one node: real sockets on 127.0.0.1, port 0.

// Shared with tests/cluster, which uses parts this binary does not.
#[allow(dead_code)]
mod helpers;

mod admission;
mod azure_rest;
mod azure_spec;
mod azure_user_groups;
mod backpressure;
mod groups;
mod idempotency;
mod keepalive;
mod limits;
mod long_polling;
mod memory;
mod process_metrics;
mod publish;
mod security;
mod shutdown;
mod stateful;
mod token_cli;
mod transport;
mod user_group_metrics;
