//! IKEv2 (RFC 7296): how vpngw negotiates its tunnels' SAs with customer
//! devices. Built sans-IO, as `../shared/STYLE.md` asks: the protocol is
//! data in, data out; a thin driver owns the UDP sockets and the clock.
//!
//! Today: `message`, the wire format (header, payload chain, every payload
//! a site-to-site exchange uses), parsed strictly and written canonically,
//! checked against Scapy's independent IKEv2 implementation. Next: the key
//! derivation and DH groups, then the exchanges' state machine and its
//! driver.

pub mod message;
