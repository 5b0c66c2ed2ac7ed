//! XDP steering for vpngw: loads the C program in `bpf/steer.c` (built by
//! `build.rs`) onto one of the gateway's ports with aya, and keeps its maps:
//! the gateway's addresses, the AF_XDP socket of each receive queue, and the
//! per-reason counters. What goes to the engine and what to the kernel is
//! decided in the C program; its comment is the specification.

use std::fmt;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::sys::SyscallError;
use aya::{Ebpf, EbpfError};

mod addr;
mod counters;

pub use addr::{addr_from_key, addr_key};
pub use counters::{Counters, Reason};

/// The compiled program: an ELF object with BTF maps. ELF parsing needs it
/// 8-byte aligned, which `include_bytes!` alone does not promise.
static STEER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

/// Map names, as declared in `bpf/steer.c`.
const XSKS: &str = "xsks";
const GATEWAY_ADDRS: &str = "gateway_addrs";
const COUNTERS: &str = "counters";

/// How many receive queues can have a socket (`MAX_QUEUES` in `bpf/steer.c`).
pub const MAX_QUEUES: u32 = 64;

/// Which side of the gateway a port is on. It picks the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Faces the customer gateways: ESP and ESP-in-UDP to the gateway's
    /// addresses go to the engine.
    Outside,
    /// Faces the VPC or cloud-connect network: what is not for the gateway
    /// itself is to be forwarded and goes to the engine.
    Inside,
}

impl Role {
    /// The program's name in `bpf/steer.c` (and in `ip link` output).
    pub fn program(self) -> &'static str {
        match self {
            Role::Outside => "steer_outside",
            Role::Inside => "steer_inside",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Outside => "outside",
            Role::Inside => "inside",
        })
    }
}

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Native XDP, run by the driver before any socket buffer exists.
    Driver,
    /// Generic (SKB) XDP, run by the kernel after it built a socket buffer:
    /// slower, but every interface has it. Used when driver mode fails.
    Generic,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Driver => "driver",
            Mode::Generic => "generic",
        })
    }
}

/// What went wrong, with the interface it happened on. The message carries
/// the whole chain of causes (aya's errors keep the errno one level down).
/// aya's errors are boxed: they are large, and `Result<_, Error>` is
/// returned on every map update.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{ifname}: loading the steering object: {}", chain(.source))]
    Load {
        ifname: String,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("{ifname}: the steering object has no {what} `{name}`")]
    Missing { ifname: String, what: &'static str, name: &'static str },
    /// Loading the program failed (the message includes the verifier's log).
    #[error("{ifname}: loading program {program}: {}", chain(.source))]
    Program {
        ifname: String,
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("{ifname}: {addr} is not one of the gateway's addresses here")]
    NotAnAddr { ifname: String, addr: IpAddr },
    #[error("{ifname}: no such interface")]
    NoSuchInterface { ifname: String },
    #[error("{ifname}: attaching {program} failed in driver mode ({driver}) and in generic mode: {}", chain(.source))]
    Attach {
        ifname: String,
        program: &'static str,
        driver: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("{ifname}: detaching {program}: {}", chain(.source))]
    Detach {
        ifname: String,
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("{ifname}: map {map}: {action}: {}", chain(.source))]
    Map {
        ifname: String,
        map: &'static str,
        action: String,
        #[source]
        source: Box<MapError>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The steering program attached to one port, and its maps. Dropping it
/// detaches the program (so does the process ending: the attachment is a
/// bpf_link, which dies with its last file descriptor).
pub struct Steering {
    ifname: String,
    role: Role,
    mode: Mode,
    driver_error: Option<String>,
    xsks: XskMap<MapData>,
    gateway_addrs: HashMap<MapData, [u8; 20], u32>,
    counters: PerCpuArray<MapData, u64>,
    link: Option<XdpLinkId>,
    ebpf: Ebpf,
}

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steering")
            .field("ifname", &self.ifname)
            .field("role", &self.role)
            .field("mode", &self.mode)
            .field("attached", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Loads the program for `role` and attaches it to `ifname` (in the
    /// calling thread's network namespace), in driver mode, or in generic
    /// mode when the driver refuses (see [`Steering::mode`] and
    /// [`Steering::driver_error`]). The maps start empty: no address, no
    /// socket.
    pub fn attach(ifname: &str, role: Role) -> Result<Steering> {
        let program = role.program();
        let mut ebpf = Ebpf::load(STEER_OBJECT)
            .map_err(|source| Error::Load { ifname: ifname.to_owned(), source: Box::new(source) })?;
        let xsks = take_map(&mut ebpf, ifname, XSKS)?;
        let gateway_addrs = take_map(&mut ebpf, ifname, GATEWAY_ADDRS)?;
        let counters = take_map(&mut ebpf, ifname, COUNTERS)?;

        let xdp: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or_else(|| Error::Missing { ifname: ifname.to_owned(), what: "program", name: program })?
            .try_into()
            .map_err(|source| Error::Program { ifname: ifname.to_owned(), program, source: Box::new(source) })?;
        xdp.load().map_err(|source| Error::Program { ifname: ifname.to_owned(), program, source: Box::new(source) })?;
        let (link, mode, driver_error) = match xdp.attach(ifname, XdpMode::Driver) {
            Ok(link) => (link, Mode::Driver, None),
            Err(ProgramError::UnknownInterface { .. }) => {
                return Err(Error::NoSuchInterface { ifname: ifname.to_owned() })
            }
            Err(driver) => match xdp.attach(ifname, XdpMode::Skb) {
                Ok(link) => (link, Mode::Generic, Some(chain(&driver))),
                Err(source) => {
                    let driver = chain(&driver);
                    return Err(Error::Attach { ifname: ifname.to_owned(), program, driver, source: Box::new(source) });
                }
            },
        };
        Ok(Steering {
            ifname: ifname.to_owned(),
            role,
            mode,
            driver_error,
            xsks,
            gateway_addrs,
            counters,
            link: Some(link),
            ebpf,
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The mode the program runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Why driver mode failed, when the program runs in generic mode: worth
    /// a warning, since generic mode costs a socket buffer per frame.
    pub fn driver_error(&self) -> Option<&str> {
        self.driver_error.as_deref()
    }

    /// Makes `addr` one of the gateway's own addresses on this port.
    /// IPv4-mapped IPv6 addresses count as the IPv4 address.
    pub fn add_addr(&mut self, addr: IpAddr) -> Result<()> {
        self.gateway_addrs
            .insert(addr_key(addr), 0, 0)
            .map_err(|source| self.map_error(GATEWAY_ADDRS, format_args!("adding {addr}"), source))
    }

    /// Stops treating `addr` as the gateway's own. Removing an address that
    /// was never added is an error ([`Error::NotAnAddr`]).
    pub fn remove_addr(&mut self, addr: IpAddr) -> Result<()> {
        self.gateway_addrs.remove(&addr_key(addr)).map_err(|source| match source {
            MapError::SyscallError(SyscallError { ref io_error, .. }) if io_error.kind() == ErrorKind::NotFound => {
                Error::NotAnAddr { ifname: self.ifname.clone(), addr }
            }
            source => self.map_error(GATEWAY_ADDRS, format_args!("removing {addr}"), source),
        })
    }

    /// The gateway's addresses on this port, in no particular order.
    pub fn addrs(&self) -> Result<Vec<IpAddr>> {
        let mut addrs = Vec::new();
        for key in self.gateway_addrs.keys() {
            let key = key.map_err(|source| self.map_error(GATEWAY_ADDRS, "listing", source))?;
            addrs.extend(addr_from_key(&key));
        }
        Ok(addrs)
    }

    /// Sends the frames the program steers to the engine on receive queue
    /// `queue` to `socket`, a bound AF_XDP socket. The map holds its own
    /// reference: closing `socket` later does not remove it, `clear_socket`
    /// does.
    pub fn set_socket(&mut self, queue: u32, socket: BorrowedFd<'_>) -> Result<()> {
        self.xsks
            .set(queue, socket, 0)
            .map_err(|source| self.map_error(XSKS, format_args!("setting the socket of queue {queue}"), source))
    }

    /// Removes queue `queue`'s socket: its frames go to the kernel
    /// (counted as no-socket).
    pub fn clear_socket(&mut self, queue: u32) -> Result<()> {
        self.xsks
            .unset(queue)
            .map_err(|source| self.map_error(XSKS, format_args!("clearing the socket of queue {queue}"), source))
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let mut counters = Counters::default();
        for reason in Reason::ALL {
            let per_cpu = self
                .counters
                .get(&(reason as u32), 0)
                .map_err(|source| self.map_error(COUNTERS, format_args!("reading {reason}"), source))?;
            counters.set(reason, per_cpu.iter().sum());
        }
        Ok(counters)
    }

    /// Detaches the program now, reporting failure (dropping detaches too,
    /// silently).
    pub fn detach(mut self) -> Result<()> {
        self.detach_link()
    }

    fn detach_link(&mut self) -> Result<()> {
        let Some(link) = self.link.take() else { return Ok(()) };
        let program = self.role.program();
        let detach = |source| Error::Detach { ifname: self.ifname.clone(), program, source: Box::new(source) };
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| Error::Missing { ifname: self.ifname.clone(), what: "program", name: program })?
            .try_into()
            .map_err(detach)?;
        xdp.detach(link).map_err(detach)
    }

    fn map_error(&self, map: &'static str, action: impl fmt::Display, source: MapError) -> Error {
        Error::Map { ifname: self.ifname.clone(), map, action: action.to_string(), source: Box::new(source) }
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        // Nothing to report to: aya would detach when `ebpf` drops anyway;
        // doing it first keeps the order plain (link, then program, then maps).
        let _ = self.detach_link();
    }
}

/// Takes map `name` out of the loaded object as the type `M` expects.
fn take_map<M>(ebpf: &mut Ebpf, ifname: &str, name: &'static str) -> Result<M>
where
    M: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| Error::Missing { ifname: ifname.to_owned(), what: "map", name })?;
    M::try_from(map).map_err(|source| Error::Map {
        ifname: ifname.to_owned(),
        map: name,
        action: "opening".to_owned(),
        source: Box::new(source),
    })
}

/// An error and its sources on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_can_move_to_another_thread() {
        fn is_send<T: Send>() {}
        is_send::<Steering>();
    }

    #[test]
    fn each_role_has_its_program() {
        assert_eq!(Role::Outside.program(), "steer_outside");
        assert_eq!(Role::Inside.program(), "steer_inside");
    }
}
