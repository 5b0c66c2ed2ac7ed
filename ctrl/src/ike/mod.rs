//! IKEv2 (RFC 7296): how vpngw negotiates its tunnels' SAs with customer
//! devices. Built sans-IO, as `../shared/STYLE.md` asks: the protocol is
//! data in, data out; a thin driver owns the UDP sockets and the clock.
//!
//! The parts:
//! - `message`, the wire format (header, payload chain, every payload a
//!   site-to-site exchange uses), parsed strictly and written canonically,
//!   checked against Scapy's independent IKEv2 implementation;
//! - `crypto`, the PRFs, prf+, the keys of IKE and child SAs (new and
//!   rekeyed) and the DH groups 14, 19, 20 and 31, checked against
//!   vectors from pyca/cryptography, Python's hmac, and RFC 7748;
//! - `sk`, the Encrypted payload with AES-GCM-16 or AES-CBC and
//!   HMAC-SHA2-256/384/512, checked against vectors pyca/cryptography sealed;
//! - `proposal`, proposals in strongSwan's syntax, offered and chosen;
//! - `sa`, one IKE SA's exchanges as a state machine (fed datagrams and
//!   times; out come datagrams, SAs to install or remove, up and down);
//! - `endpoint`, the IKE SAs behind one address, and `driver`, its UDP
//!   sockets (500, and 4500 with the non-ESP marker) and clock.
//!
//! `crate::negotiation` joins them to the control thread.

pub mod crypto;
pub mod driver;
pub mod endpoint;
pub mod message;
pub mod proposal;
pub mod sa;
pub mod sk;
