//! The control socket's protocol: one JSON object per line each way, and
//! the pure part of serving it — turning a batch of changes into the next
//! configuration. A request:
//!
//! ```json
//! {"version": 1, "id": 7, "request": {"apply": {"changes": [
//!     {"add": {"route": {"gateway": "gw1", "prefix": "172.16.0.0/16", "via": "tunnel:t1"}}},
//!     {"delete": {"tunnel": "t0"}}], "cascade": false}}}
//! ```
//!
//! Objects are written in the configuration file's schema
//! ([`crate::config`]); `set` replaces the object with the same identity
//! (a name; for an SPD rule its gateway and selectors; for a route its
//! gateway, prefix and next hop). A batch is applied whole or not at all.
//! The reply carries the same `id`, `ok`, and a `result` or an `error`.

use crate::config::{Config, ConfigError, CustomerGateway, Gateway, Route, SpdRule, Tunnel};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;

/// The protocol version this daemon speaks.
pub const VERSION: u32 = 1;

/// The longest request line accepted (a batch of thousands of objects fits).
pub const MAX_LINE: usize = 8 << 20;

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u32,
    /// Echoed in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Changes applied as one new snapshot, all or nothing. `cascade`:
    /// deleting an object also deletes what refers to it (otherwise such a
    /// delete is refused).
    Apply {
        changes: Vec<Change>,
        #[serde(default)]
        cascade: bool,
    },
    /// The objects of a kind (of one gateway, if given).
    List {
        kind: Kind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
    },
    /// One named object (gateway, customer gateway or tunnel).
    Show { kind: Kind, name: String },
    /// The running configuration, in the configuration file's schema.
    Export,
    /// Traffic per gateway and per tunnel: totals, rates, drops.
    Stats,
    /// Every SA with its counters.
    Sas,
    /// The workers, their ports' counters and burst latency.
    Workers,
    /// Where a gateway sends traffic to `address` now: the SPD rule or
    /// route that carries it.
    Lookup {
        gateway: String,
        address: IpAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<IpAddr>,
    },
    /// The events after number `since` (all kept, if absent), at most
    /// 1,000, and the number of the last one.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// The counters in the Prometheus text format (what the metrics
    /// endpoint serves).
    Metrics,
    /// Starts copying `count` packets of `tunnel` at `point`, at most `pps`
    /// a second (default 10,000); one capture at a time. Answers its id.
    Capture {
        tunnel: String,
        point: CapturePoint,
        count: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pps: Option<u64>,
    },
    /// The packets a capture copied since the last read (at most 1,000),
    /// hex-encoded, and whether it is done.
    CaptureRead { id: u64 },
    /// Ends a capture.
    CaptureStop { id: u64 },
    /// The IKE-keyed tunnels: their IKE SAs (state, algorithms,
    /// identities, child SA, next rekey) and why each last failed.
    Ike,
}

/// Where a capture copies a tunnel's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapturePoint {
    /// The IP packets inside the tunnel.
    Inner,
    /// The ESP packets.
    Outer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Gateway,
    CustomerGateway,
    Tunnel,
    Spd,
    Route,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Change {
    Add(Object),
    /// Replaces the object with the same identity.
    Set(Object),
    Delete(Key),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Object {
    Gateway(Gateway),
    CustomerGateway(CustomerGateway),
    Tunnel(Tunnel),
    Spd(SpdRule),
    Route(Route),
}

/// What identifies an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Key {
    Gateway(String),
    CustomerGateway(String),
    Tunnel(String),
    Spd(SpdKey),
    Route(RouteKey),
}

/// An SPD rule's identity: its gateway and selectors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdKey {
    pub gateway: String,
    pub local: String,
    pub remote: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ports: Option<String>,
}

/// A route's identity: its gateway, prefix and next hop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteKey {
    pub gateway: String,
    pub prefix: String,
    pub via: String,
}

impl SpdKey {
    pub fn of(r: &SpdRule) -> Self {
        SpdKey {
            gateway: r.gateway.clone(),
            local: r.local.clone(),
            remote: r.remote.clone(),
            protocol: r.protocol.clone(),
            local_ports: r.local_ports.clone(),
            remote_ports: r.remote_ports.clone(),
        }
    }
}

impl RouteKey {
    pub fn of(r: &Route) -> Self {
        RouteKey { gateway: r.gateway.clone(), prefix: r.prefix.clone(), via: r.via.clone() }
    }
}

impl std::fmt::Display for SpdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spd rule {} -> {} (gateway {}", self.local, self.remote, self.gateway)?;
        for (what, v) in
            [("protocol", &self.protocol), ("local ports", &self.local_ports), ("remote ports", &self.remote_ports)]
        {
            if let Some(v) = v {
                write!(f, ", {what} {v}")?;
            }
        }
        write!(f, ")")
    }
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "route {} via {} (gateway {})", self.prefix, self.via, self.gateway)
    }
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    pub fn ok(id: Option<u64>, result: serde_json::Value) -> Self {
        Response { version: VERSION, id, ok: true, result: Some(result), error: None }
    }

    pub fn error(id: Option<u64>, error: ApiError) -> Self {
        Response { version: VERSION, id, ok: false, result: None, error: Some(error) }
    }

    /// The reply as one line (with its newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a response serializes") + "\n"
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Not JSON, or not a request of this protocol.
    Parse,
    /// A protocol version this daemon does not speak.
    Version,
    /// A value that cannot run (names the object, field and value).
    Invalid,
    /// An object added twice.
    Exists,
    /// An object that is not there.
    NotFound,
    /// A delete of something other objects still use.
    InUse,
    /// The line is longer than [`MAX_LINE`].
    TooLong,
    /// Too many clients, or the daemon is shutting down.
    Busy,
    /// The peer may not use the socket.
    Denied,
    /// The change could not be written to the state file (not applied).
    Persist,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into(), object: None, field: None, value: None }
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        let message = e.to_string();
        match e {
            ConfigError::Parse(_) => ApiError::new(ErrorKind::Parse, message),
            ConfigError::Invalid { object, field, value, .. } => ApiError {
                kind: ErrorKind::Invalid,
                message,
                object: Some(object),
                field: Some(field.to_string()),
                value: Some(value),
            },
        }
    }
}

/// Parses one request line. Refuses what is not this protocol, naming the
/// problem (serde's message says where).
pub fn parse(line: &[u8]) -> Result<Envelope, ApiError> {
    if line.len() > MAX_LINE {
        return Err(ApiError::new(ErrorKind::TooLong, format!("a request is at most {MAX_LINE} bytes")));
    }
    // The version first, so an old or new client hears about the version
    // rather than about a field it did not expect.
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<u32>,
    }
    let v: Versioned = serde_json::from_slice(line)
        .map_err(|e| ApiError::new(ErrorKind::Parse, format!("not a JSON request object: {e}")))?;
    match v.version {
        Some(VERSION) => {}
        Some(other) => {
            return Err(ApiError::new(
                ErrorKind::Version,
                format!("protocol version {other} is not spoken here (this daemon speaks {VERSION})"),
            ))
        }
        None => return Err(ApiError::new(ErrorKind::Parse, "the request has no \"version\"")),
    }
    serde_json::from_slice(line).map_err(|e| ApiError::new(ErrorKind::Parse, format!("not a valid request: {e}")))
}

/// The configuration after `changes`, checked for existence and references
/// (values are checked when the result is turned into a model).
pub fn apply(cfg: &Config, changes: &[Change], cascade: bool) -> Result<Config, ApiError> {
    let mut next = cfg.clone();
    // Built when first needed, dropped when a delete moves positions.
    let mut index: Option<Index> = None;
    for change in changes {
        match change {
            Change::Add(o) | Change::Set(o) => {
                let ix = index.get_or_insert_with(|| Index::of(&next));
                if matches!(change, Change::Add(_)) {
                    add(&mut next, ix, o)?
                } else {
                    set(&mut next, ix, o)?
                }
            }
            Change::Delete(k) => {
                delete(&mut next, k, cascade)?;
                index = None;
            }
        }
    }
    Ok(next)
}

/// Where each object is in its list, by identity: a batch of thousands of
/// adds finds duplicates without scanning the lists for each.
struct Index {
    gateways: HashMap<String, usize>,
    customer_gateways: HashMap<String, usize>,
    tunnels: HashMap<String, usize>,
    spd: HashMap<SpdKey, usize>,
    routes: HashMap<RouteKey, usize>,
}

impl Index {
    fn of(cfg: &Config) -> Self {
        let named = |names: Vec<&String>| names.into_iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Index {
            gateways: named(cfg.gateways.iter().map(|x| &x.name).collect()),
            customer_gateways: named(cfg.customer_gateways.iter().map(|x| &x.name).collect()),
            tunnels: named(cfg.tunnels.iter().map(|x| &x.name).collect()),
            spd: cfg.spd.iter().enumerate().map(|(i, r)| (SpdKey::of(r), i)).collect(),
            routes: cfg.routes.iter().enumerate().map(|(i, r)| (RouteKey::of(r), i)).collect(),
        }
    }

    /// Where the object with `o`'s identity is in its list.
    fn position(&self, o: &Object) -> Option<usize> {
        match o {
            Object::Gateway(g) => self.gateways.get(&g.name),
            Object::CustomerGateway(c) => self.customer_gateways.get(&c.name),
            Object::Tunnel(t) => self.tunnels.get(&t.name),
            Object::Spd(r) => self.spd.get(&SpdKey::of(r)),
            Object::Route(r) => self.routes.get(&RouteKey::of(r)),
        }
        .copied()
    }

    /// Records `o` at position `i`.
    fn insert(&mut self, o: &Object, i: usize) {
        match o {
            Object::Gateway(g) => self.gateways.insert(g.name.clone(), i),
            Object::CustomerGateway(c) => self.customer_gateways.insert(c.name.clone(), i),
            Object::Tunnel(t) => self.tunnels.insert(t.name.clone(), i),
            Object::Spd(r) => self.spd.insert(SpdKey::of(r), i),
            Object::Route(r) => self.routes.insert(RouteKey::of(r), i),
        };
    }
}

fn exists(what: impl std::fmt::Display) -> ApiError {
    ApiError { object: Some(what.to_string()), ..ApiError::new(ErrorKind::Exists, format!("{what} already exists")) }
}

fn not_found(what: impl std::fmt::Display) -> ApiError {
    ApiError { object: Some(what.to_string()), ..ApiError::new(ErrorKind::NotFound, format!("{what} does not exist")) }
}

fn add(cfg: &mut Config, index: &mut Index, o: &Object) -> Result<(), ApiError> {
    if index.position(o).is_some() {
        return Err(exists(describe(o)));
    }
    let at = match o.clone() {
        Object::Gateway(g) => (cfg.gateways.len(), cfg.gateways.push(g)).0,
        Object::CustomerGateway(c) => (cfg.customer_gateways.len(), cfg.customer_gateways.push(c)).0,
        Object::Tunnel(t) => (cfg.tunnels.len(), cfg.tunnels.push(t)).0,
        Object::Spd(r) => (cfg.spd.len(), cfg.spd.push(r)).0,
        Object::Route(r) => (cfg.routes.len(), cfg.routes.push(r)).0,
    };
    index.insert(o, at);
    Ok(())
}

fn set(cfg: &mut Config, index: &mut Index, o: &Object) -> Result<(), ApiError> {
    let i = index.position(o).ok_or_else(|| not_found(describe(o)))?;
    match o.clone() {
        Object::Gateway(g) => cfg.gateways[i] = g,
        Object::CustomerGateway(c) => cfg.customer_gateways[i] = c,
        Object::Tunnel(t) => cfg.tunnels[i] = t,
        Object::Spd(r) => cfg.spd[i] = r,
        Object::Route(r) => cfg.routes[i] = r,
    }
    Ok(())
}

fn describe(o: &Object) -> String {
    match o {
        Object::Gateway(g) => format!("gateway {}", g.name),
        Object::CustomerGateway(c) => format!("customer gateway {}", c.name),
        Object::Tunnel(t) => format!("tunnel {}", t.name),
        Object::Spd(r) => SpdKey::of(r).to_string(),
        Object::Route(r) => RouteKey::of(r).to_string(),
    }
}

/// Deletes `k`; what refers to it is deleted too with `cascade`, else the
/// delete is refused, naming the users.
fn delete(cfg: &mut Config, k: &Key, cascade: bool) -> Result<(), ApiError> {
    let users = |cfg: &Config| -> Vec<String> {
        let mut u = Vec::new();
        match k {
            Key::Gateway(g) => {
                u.extend(cfg.tunnels.iter().filter(|t| &t.gateway == g).map(|t| format!("tunnel {}", t.name)));
                u.extend(cfg.spd.iter().filter(|r| &r.gateway == g).map(|r| SpdKey::of(r).to_string()));
                u.extend(cfg.routes.iter().filter(|r| &r.gateway == g).map(|r| RouteKey::of(r).to_string()));
            }
            Key::CustomerGateway(c) => {
                u.extend(cfg.tunnels.iter().filter(|t| &t.customer_gateway == c).map(|t| format!("tunnel {}", t.name)))
            }
            Key::Tunnel(t) => {
                let protect = format!("protect:{t}");
                let via = format!("tunnel:{t}");
                u.extend(cfg.spd.iter().filter(|r| r.action == protect).map(|r| SpdKey::of(r).to_string()));
                u.extend(cfg.routes.iter().filter(|r| r.via == via).map(|r| RouteKey::of(r).to_string()));
            }
            Key::Spd(_) | Key::Route(_) => {}
        }
        u
    };
    let what = match k {
        Key::Gateway(n) => format!("gateway {n}"),
        Key::CustomerGateway(n) => format!("customer gateway {n}"),
        Key::Tunnel(n) => format!("tunnel {n}"),
        Key::Spd(s) => s.to_string(),
        Key::Route(r) => r.to_string(),
    };
    let found = match k {
        Key::Gateway(n) => cfg.gateways.iter().any(|x| &x.name == n),
        Key::CustomerGateway(n) => cfg.customer_gateways.iter().any(|x| &x.name == n),
        Key::Tunnel(n) => cfg.tunnels.iter().any(|x| &x.name == n),
        Key::Spd(s) => cfg.spd.iter().any(|x| &SpdKey::of(x) == s),
        Key::Route(r) => cfg.routes.iter().any(|x| &RouteKey::of(x) == r),
    };
    if !found {
        return Err(not_found(what));
    }
    let used_by = users(cfg);
    if !used_by.is_empty() && !cascade {
        let shown: Vec<&str> = used_by.iter().take(5).map(String::as_str).collect();
        let more = if used_by.len() > 5 { format!(" and {} more", used_by.len() - 5) } else { String::new() };
        return Err(ApiError {
            object: Some(what.clone()),
            ..ApiError::new(
                ErrorKind::InUse,
                format!("{what} is used by {}{more}; delete those first, or ask for a cascade", shown.join(", ")),
            )
        });
    }
    match k {
        Key::Gateway(n) => {
            // The gateway's tunnels take their SPD rules and routes along.
            let tunnels: Vec<String> = cfg.tunnels.iter().filter(|t| &t.gateway == n).map(|t| t.name.clone()).collect();
            for t in tunnels {
                delete(cfg, &Key::Tunnel(t), true)?;
            }
            cfg.spd.retain(|r| &r.gateway != n);
            cfg.routes.retain(|r| &r.gateway != n);
            cfg.gateways.retain(|x| &x.name != n);
        }
        Key::CustomerGateway(n) => {
            let tunnels: Vec<String> =
                cfg.tunnels.iter().filter(|t| &t.customer_gateway == n).map(|t| t.name.clone()).collect();
            for t in tunnels {
                delete(cfg, &Key::Tunnel(t), true)?;
            }
            cfg.customer_gateways.retain(|x| &x.name != n);
        }
        Key::Tunnel(n) => {
            let (protect, via) = (format!("protect:{n}"), format!("tunnel:{n}"));
            cfg.spd.retain(|r| r.action != protect);
            cfg.routes.retain(|r| r.via != via);
            cfg.tunnels.retain(|x| &x.name != n);
        }
        Key::Spd(s) => cfg.spd.retain(|x| &SpdKey::of(x) != s),
        Key::Route(r) => cfg.routes.retain(|x| &RouteKey::of(x) != r),
    }
    Ok(())
}

/// The configuration objects of a kind, as JSON (for `list`).
pub fn list(cfg: &Config, kind: Kind, gateway: Option<&str>) -> serde_json::Value {
    let of = |g: &str| gateway.is_none_or(|want| want == g);
    let v = match kind {
        Kind::Gateway => serde_json::to_value(cfg.gateways.iter().filter(|g| of(&g.name)).collect::<Vec<_>>()),
        Kind::CustomerGateway => serde_json::to_value(&cfg.customer_gateways),
        Kind::Tunnel => serde_json::to_value(cfg.tunnels.iter().filter(|t| of(&t.gateway)).collect::<Vec<_>>()),
        Kind::Spd => serde_json::to_value(cfg.spd.iter().filter(|r| of(&r.gateway)).collect::<Vec<_>>()),
        Kind::Route => serde_json::to_value(cfg.routes.iter().filter(|r| of(&r.gateway)).collect::<Vec<_>>()),
    };
    v.expect("configuration objects serialize")
}

/// One named object, as JSON (for `show`).
pub fn show(cfg: &Config, kind: Kind, name: &str) -> Result<serde_json::Value, ApiError> {
    let v = match kind {
        Kind::Gateway => cfg.gateways.iter().find(|x| x.name == name).map(serde_json::to_value),
        Kind::CustomerGateway => cfg.customer_gateways.iter().find(|x| x.name == name).map(serde_json::to_value),
        Kind::Tunnel => cfg.tunnels.iter().find(|x| x.name == name).map(serde_json::to_value),
        Kind::Spd | Kind::Route => {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                "SPD rules and routes have no name: list them (with --gateway) instead",
            ))
        }
    };
    let kind_name = serde_json::to_value(kind).expect("a kind serializes");
    v.map(|v| v.expect("configuration objects serialize"))
        .ok_or_else(|| not_found(format!("{} {name}", kind_name.as_str().unwrap_or("object"))))
}

#[cfg(test)]
mod tests;
