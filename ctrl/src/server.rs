//! The control socket's transport: a unix stream socket (mode 0660) whose
//! peers are checked with SO_PEERCRED (root, the daemon's own user, or a
//! configured group), one thread per client reading request lines, each
//! request parsed there and handed to the control thread as a [`Call`].
//! Hostile or broken clients cost themselves only: a line that is not a
//! request gets an error reply, an oversized line or a client silent for
//! [`IDLE`] is disconnected, and clients beyond [`MAX_CLIENTS`] are told
//! so and closed. The data plane never waits on any of this.

use crate::api::{self, ApiError, Envelope, ErrorKind, Response};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Clients served at once.
pub const MAX_CLIENTS: usize = 512;

/// A client that sends no complete request for this long is disconnected.
pub const IDLE: Duration = Duration::from_secs(10);

/// How long a client waits for the control thread before hearing "busy".
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// A request for the control thread, and where its reply goes.
pub struct Call {
    pub envelope: Envelope,
    pub reply: SyncSender<Response>,
}

/// Who may use the socket besides root and the daemon's own user.
#[derive(Debug, Clone, Copy, Default)]
pub struct Access {
    pub group: Option<u32>,
}

/// Binds the control socket at `path`: mode 0660, owned by `access.group`
/// if given. A socket file left by a daemon that died is replaced; one a
/// live daemon serves is not.
pub fn bind(path: &Path, access: Access) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another vpngw is serving this socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(listener)
}

/// Serves `listener` until `stop` is set, handing requests to `calls`.
pub fn serve(listener: UnixListener, calls: SyncSender<Call>, access: Access, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    listener.set_nonblocking(true).expect("a listening socket can be made non-blocking");
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("vpngw-ctl-accept".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                if let Err(e) = allowed(&stream, access) {
                    refuse(stream, e);
                    continue;
                }
                if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Ordering::SeqCst);
                    refuse(stream, ApiError::new(ErrorKind::Busy, format!("{MAX_CLIENTS} clients are connected")));
                    continue;
                }
                let (calls, count, stop) = (calls.clone(), clients.clone(), stop.clone());
                let spawned = std::thread::Builder::new().name("vpngw-ctl-client".into()).stack_size(256 << 10).spawn(
                    move || {
                        client(stream, &calls, &stop);
                        count.fetch_sub(1, Ordering::SeqCst);
                    },
                );
                if spawned.is_err() {
                    clients.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .expect("the control socket thread starts")
}

fn refuse(mut stream: UnixStream, e: ApiError) {
    let _ = stream.write_all(Response::error(None, e).line().as_bytes());
}

/// Serves one client: a reply for every line, until it hangs up, idles, or
/// sends a line too long to be a request.
fn client(stream: UnixStream, calls: &SyncSender<Call>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(IDLE));
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(api::MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => return, // idle, or gone
        }
        if line.len() > api::MAX_LINE {
            let e = ApiError::new(ErrorKind::TooLong, format!("a request line is at most {} bytes", api::MAX_LINE));
            let _ = out.write_all(Response::error(None, e).line().as_bytes());
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reply = match api::parse(&line) {
            Err(e) => Response::error(None, e),
            Ok(envelope) => ask(calls, envelope, stop),
        };
        if out.write_all(reply.line().as_bytes()).is_err() {
            return;
        }
    }
}

/// Hands a request to the control thread and waits for its answer.
fn ask(calls: &SyncSender<Call>, envelope: Envelope, stop: &AtomicBool) -> Response {
    let id = envelope.id;
    let (tx, rx): (SyncSender<Response>, Receiver<Response>) = mpsc::sync_channel(1);
    let busy = |why: &str| Response::error(id, ApiError::new(ErrorKind::Busy, why));
    if stop.load(Ordering::Relaxed) || calls.send(Call { envelope, reply: tx }).is_err() {
        return busy("the daemon is shutting down");
    }
    rx.recv_timeout(ANSWER_WITHIN).unwrap_or_else(|_| busy("the control thread did not answer in time"))
}

/// Root, the daemon's own user, and members of the configured group may
/// talk to the daemon.
fn allowed(stream: &UnixStream, access: Access) -> Result<(), ApiError> {
    let cred = peer_credentials(stream).map_err(|e| ApiError::new(ErrorKind::Denied, format!("SO_PEERCRED: {e}")))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let in_group = access.group.is_some_and(|g| cred.gid == g || supplementary_groups(cred.pid).contains(&g));
    if cred.uid == 0 || cred.uid == me || in_group {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Denied,
            format!("user {} may not manage this gateway (root or the socket's group only)", cred.uid),
        ))
    }
}

/// The connecting process's pid, uid and gid, as the kernel recorded them.
fn peer_credentials(stream: &UnixStream) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is a live unix socket owned by `stream`; `cred` and
    // `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cred)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A process's supplementary groups (from /proc; none if it is gone).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}
