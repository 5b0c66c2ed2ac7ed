//! The kernel's view of the gateway's interfaces, over rtnetlink: each
//! interface's index, MAC, MTU and addresses, the neighbour table (next-hop
//! MACs), and asking the kernel to resolve a neighbour the data plane
//! needs (an `NTF_USE` update: the kernel sends the ARP request or
//! neighbour solicitation itself, and the answer lands in the table).

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;
use vpngw_engine::wire::ether::MacAddr;

/// An interface as the kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u16,
}

/// A route netlink socket of the calling thread's network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0, buf: vec![0; 1 << 16] })
    }

    /// The interface called `name`.
    pub fn interface(&mut self, name: &str) -> io::Result<Interface> {
        let links = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        for m in links {
            let RouteNetlinkMessage::NewLink(link) = m else { continue };
            let (mut found, mut mac, mut mtu) = (None, None, None);
            for a in &link.attributes {
                match a {
                    LinkAttribute::IfName(n) if n == name => found = Some(n.clone()),
                    LinkAttribute::Address(m) if m.len() == 6 => mac = Some([m[0], m[1], m[2], m[3], m[4], m[5]]),
                    LinkAttribute::Mtu(m) => mtu = Some((*m).min(u16::MAX as u32) as u16),
                    _ => {}
                }
            }
            if let Some(name) = found {
                let mac = mac.ok_or_else(|| io::Error::other(format!("{name} has no Ethernet address")))?;
                return Ok(Interface { index: link.header.index, name, mac, mtu: mtu.unwrap_or(1500) });
            }
        }
        Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {name:?} in this network namespace")))
    }

    /// The addresses of interface `index` (IPv6 link-local ones left out).
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<IpAddr>> {
        let msgs = self.request(RouteNetlinkMessage::GetAddress(AddressMessage::default()), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else { continue };
            if a.header.index != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address where both exist
            // (point-to-point links); IFA_ADDRESS otherwise.
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            match addr {
                Some(IpAddr::V6(v6)) if v6.is_unicast_link_local() => {}
                Some(ip) => out.push(ip),
                None => {}
            }
        }
        Ok(out)
    }

    /// The resolved neighbours of interface `index`: address and MAC.
    pub fn neighbours(&mut self, index: u32) -> io::Result<Vec<(IpAddr, MacAddr)>> {
        let msgs = self.request(RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
            let usable = matches!(
                n.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            );
            if n.header.ifindex != index || !usable {
                continue;
            }
            let (mut ip, mut mac) = (None, None);
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
                    NeighbourAttribute::LinkLocalAddress(m) if m.len() == 6 => {
                        mac = Some([m[0], m[1], m[2], m[3], m[4], m[5]])
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.push((ip, mac));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Asks the kernel to resolve `ip` on interface `index` (as `ip neigh
    /// replace IP dev X use nud none` does): an entry in use that is not
    /// resolved is probed. Returns once the kernel has taken the request.
    pub fn resolve(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let mut n = NeighbourMessage::default();
        n.header.family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        n.header.ifindex = index;
        n.header.state = NeighbourState::None;
        n.header.flags = NeighbourFlags::Use;
        n.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        self.request(RouteNetlinkMessage::NewNeighbour(n), NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK).map(drop)
    }

    /// Sends `msg` and collects the answers up to the end of a dump or the
    /// acknowledgement; a netlink error becomes the I/O error it carries.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut at = 0;
            while at < n {
                let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&self.buf[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}")))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink: empty message"));
                }
                at += len.next_multiple_of(4);
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) if !dump => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
            }
        }
    }
}
