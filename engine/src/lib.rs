//! vpngw's data plane: packets in, packets out.
//!
//! Today this is the ESP core: zero-copy header views ([`wire`]), the AEAD
//! suites ([`crypto`]), security associations ([`sa`]) with their replay
//! windows ([`replay`]) and lifetimes ([`lifetime`]), tunnel-mode encapsulation and decapsulation
//! ([`esp`]), the inbound SA database ([`sad`]), drop counters ([`stats`])
//! and capture files ([`pcap`]). See `docs/ARCHITECTURE.md` for the map.

pub mod buf;
pub mod crypto;
pub mod esp;
pub mod fib;
pub mod io;
pub mod lifetime;
pub mod model;
pub mod pcap;
pub mod pipeline;
pub mod policer;
pub mod prefetch;
pub mod probe;
pub mod replay;
pub mod sa;
pub mod sad;
pub mod snapshot;
pub mod spd;
pub mod stats;
pub mod tap;
pub mod wire;
pub mod worker;

pub use buf::PacketBuf;
pub use crypto::Suite;
pub use sa::{Direction, InboundSa, NatT, OutboundSa, SaConfig};
pub use stats::DropReason;
