//! vpngw's control plane: the configuration schema and the helpers the
//! daemon and operator tools share.

pub mod config;
pub mod daemon;
pub mod hex;
pub mod kernel;
pub mod report;
