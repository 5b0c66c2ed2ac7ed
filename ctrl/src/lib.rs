//! vpngw's control plane: the configuration schema, the daemon and its
//! control socket, and the helpers the daemon and operator tools share.

pub mod api;
pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod health;
pub mod hex;
pub mod ike;
pub mod kernel;
pub mod metrics;
pub mod negotiation;
pub mod report;
pub mod server;
pub mod state;
