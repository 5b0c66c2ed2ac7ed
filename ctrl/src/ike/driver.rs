//! The thin I/O around an [`Endpoint`]: two ordinary kernel UDP sockets on
//! the gateway's address, port 500 and port 4500 (where IKE messages carry
//! the four-byte non-ESP marker, RFC 3948 section 2.2, and one-byte 0xff
//! datagrams are NAT keepalives), and the clock. The XDP steering program
//! passes exactly these to the kernel; ESP in UDP goes to the engine.
//! Where a NAT was detected, it sends a keepalive to the peer every
//! [`KEEPALIVE`] (RFC 3948 section 2.3), so the NAT keeps the mapping.

use super::endpoint::{Endpoint, TunnelId};
use super::sa::{Datagram, Output, Phase, IKE_PORT, NATT_PORT};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// How often a NAT keepalive goes to each peer behind a NAT.
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// The largest IKE message taken (vpngw sends no fragments; IKE_AUTH
/// with a PSK is far below this).
const MAX_DATAGRAM: usize = 65535;

/// What came in that was not IKE, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub sent: u64,
    pub keepalives: u64,
    pub keepalives_sent: u64,
    /// On port 4500 without the marker: ESP the engine should have had.
    pub not_ike: u64,
    pub send_errors: u64,
}

pub struct Driver {
    ike: UdpSocket,
    natt: UdpSocket,
    buf: Vec<u8>,
    last_keepalive: Option<Instant>,
    pub counters: Counters,
}

impl Driver {
    /// Binds ports 500 and 4500 on `local` (non-blocking).
    pub fn bind(local: IpAddr) -> io::Result<Driver> {
        let open = |port| -> io::Result<UdpSocket> {
            let s = UdpSocket::bind(SocketAddr::new(local, port))
                .map_err(|e| io::Error::new(e.kind(), format!("IKE port {local}:{port}: {e}")))?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        Ok(Driver {
            ike: open(IKE_PORT)?,
            natt: open(NATT_PORT)?,
            buf: vec![0; MAX_DATAGRAM],
            last_keepalive: None,
            counters: Counters::default(),
        })
    }

    /// One turn: reads what has come, runs the timers that are due, sends
    /// what the endpoint wants sent, and hands every other output to
    /// `handle`.
    pub fn turn(&mut self, endpoint: &mut Endpoint, now: Instant, handle: impl FnMut(Option<TunnelId>, Output)) {
        self.receive(endpoint, now);
        self.act(endpoint, now, handle);
    }

    /// Hands the endpoint every datagram that has come.
    pub fn receive(&mut self, endpoint: &mut Endpoint, now: Instant) {
        for port in [IKE_PORT, NATT_PORT] {
            loop {
                let socket = if port == IKE_PORT { &self.ike } else { &self.natt };
                let (n, from) = match socket.recv_from(&mut self.buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                let data = &self.buf[..n];
                let ike = match port {
                    NATT_PORT if data == [0xff] => {
                        self.counters.keepalives += 1;
                        continue;
                    }
                    NATT_PORT if data.len() < 4 || data[..4] != NON_ESP_MARKER => {
                        self.counters.not_ike += 1;
                        continue;
                    }
                    NATT_PORT => &data[4..],
                    _ => data,
                };
                self.counters.received += 1;
                endpoint.receive(now, port, from, ike);
            }
        }
    }

    /// Runs the timers that are due, sends keepalives and what the
    /// endpoint wants sent, and hands every other output to `handle`.
    pub fn act(&mut self, endpoint: &mut Endpoint, now: Instant, mut handle: impl FnMut(Option<TunnelId>, Output)) {
        if endpoint.next_timeout().is_some_and(|t| t <= now) {
            endpoint.on_timeout(now);
        }
        if self.last_keepalive.is_none_or(|t| now >= t + KEEPALIVE) {
            self.last_keepalive = Some(now);
            let behind_nat: Vec<SocketAddr> = endpoint
                .sas()
                .filter(|(_, sa)| sa.phase() == Phase::Established && sa.nat())
                .map(|(_, sa)| sa.remote())
                .collect();
            for peer in behind_nat {
                match self.natt.send_to(&[0xff], peer) {
                    Ok(_) => self.counters.keepalives_sent += 1,
                    Err(_) => self.counters.send_errors += 1,
                }
            }
        }
        while let Some((tunnel, o)) = endpoint.poll() {
            match o {
                Output::Send(d) => self.send(&d),
                o => handle(tunnel, o),
            }
        }
    }

    fn send(&mut self, d: &Datagram) {
        let sent = if d.local_port == NATT_PORT {
            let mut framed = Vec::with_capacity(4 + d.bytes.len());
            framed.extend_from_slice(&NON_ESP_MARKER);
            framed.extend_from_slice(&d.bytes);
            self.natt.send_to(&framed, d.remote)
        } else {
            self.ike.send_to(&d.bytes, d.remote)
        };
        match sent {
            Ok(_) => self.counters.sent += 1,
            Err(_) => self.counters.send_errors += 1,
        }
    }
}
