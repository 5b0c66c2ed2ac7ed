//! What happened to the gateway's tunnels, in order: state changes (and
//! why), health-check transitions, SA lifetimes reached, alarms raised and
//! cleared. Kept in a bounded ring, numbered so a client can ask for what
//! came after the last one it saw (`vpnctl events --follow`), and each
//! written to the log as one structured line.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many events are kept.
pub const KEPT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Numbered from 1, in order.
    pub seq: u64,
    /// Milliseconds since 1970.
    pub time_ms: u64,
    /// `tunnel-up`, `tunnel-down`, `health-failing`, `health-recovering`,
    /// `sa-lifetime`, `alarm`, `alarm-cleared`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// Why, in words.
    pub detail: String,
}

impl Event {
    /// The event as a logfmt line: `event seq=.. kind=.. tunnel=.. detail="..."`.
    pub fn log_line(&self) -> String {
        let mut s = format!("event seq={} time_ms={} kind={}", self.seq, self.time_ms, self.kind);
        for (k, v) in [("gateway", &self.gateway), ("tunnel", &self.tunnel)] {
            if let Some(v) = v {
                s += &format!(" {k}={}", quoted(v));
            }
        }
        s + &format!(" detail={}", quoted(&self.detail))
    }
}

/// A logfmt value: bare if it can be, else in quotes with `"` and `\` escaped.
fn quoted(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\') {
        v.to_string()
    } else {
        format!("\"{}\"", v.escape_default())
    }
}

/// The ring of recent events.
#[derive(Debug, Default)]
pub struct Events {
    ring: VecDeque<Event>,
    last: u64,
}

impl Events {
    /// Records an event now; returns it (for the log).
    pub fn push(&mut self, kind: &str, gateway: Option<&str>, tunnel: Option<&str>, detail: String) -> &Event {
        self.last += 1;
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if self.ring.len() == KEPT {
            self.ring.pop_front();
        }
        self.ring.push_back(Event {
            seq: self.last,
            time_ms,
            kind: kind.to_string(),
            gateway: gateway.map(str::to_string),
            tunnel: tunnel.map(str::to_string),
            detail,
        });
        self.ring.back().expect("just pushed")
    }

    /// The events after `since` (all kept, if none), oldest first, at most
    /// `limit`.
    pub fn after(&self, since: Option<u64>, limit: usize) -> Vec<Event> {
        let since = since.unwrap_or(0);
        self.ring.iter().filter(|e| e.seq > since).take(limit).cloned().collect()
    }

    /// The events kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.ring.iter()
    }

    /// The number of the last event (0: none yet).
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_bounded_and_read_from_a_point() {
        let mut ev = Events::default();
        for i in 0..KEPT + 10 {
            ev.push("tunnel-down", Some("gw"), Some("ta"), format!("{i}"));
        }
        assert_eq!(ev.last(), KEPT as u64 + 10);
        let all = ev.after(None, usize::MAX);
        assert_eq!((all.len(), all[0].seq), (KEPT, 11), "the oldest went");
        let tail = ev.after(Some(KEPT as u64 + 8), 10);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [KEPT as u64 + 9, KEPT as u64 + 10]);
        assert_eq!(ev.after(Some(5), 3).len(), 3);
    }

    #[test]
    fn log_lines_are_logfmt() {
        let mut ev = Events::default();
        let e = ev.push("tunnel-down", Some("gw"), Some("t a"), "health check: 3 probes \"lost\"".into()).clone();
        let line = e.log_line();
        assert!(line.starts_with("event seq=1 time_ms="), "{line}");
        assert!(
            line.ends_with(r#" kind=tunnel-down gateway=gw tunnel="t a" detail="health check: 3 probes \"lost\"""#),
            "{line}"
        );
    }
}
