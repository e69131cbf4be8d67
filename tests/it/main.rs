//! Integration tests: one test binary (as ripgrep and uv do), one module per concern.

mod answers;
mod breaker;
mod collect;
mod common;
mod crash;
mod hostile;
mod hostile_server;
mod identity;
mod journal;
mod layout;
mod manifests;
mod pending;
mod progress;
mod run;
mod shutdown;
mod sim;
mod sim_account;
mod templates;
mod tls;
mod unattended;
mod usage;
