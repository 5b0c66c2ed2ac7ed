//! The Prometheus endpoint (opt-in: `vpngw --metrics ADDR`): the counters
//! in the text exposition format (version 0.0.4), rendered by the control
//! thread on each scrape, and a small HTTP/1.1 server that answers
//! `GET /metrics` with them. The server asks the control thread over the
//! same channel as the control socket, so a scrape sees what `vpnctl stats`
//! sees.

use crate::api::{Envelope, Request, Response, VERSION};
use crate::report::{Report, Stats};
use crate::server::Call;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the endpoint listens when `--metrics` names no address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9477";

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// Writes metric families: a `# HELP` and `# TYPE` line, then samples.
struct Writer(String);

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP vpngw_{name} {help}\n# TYPE vpngw_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        let _ = writeln!(self.0, "vpngw_{name}{{{}}} {v}", l.join(","));
    }
}

/// The counters as Prometheus text.
pub fn render(stats: &Stats, report: &Report) -> String {
    let mut w = Writer(String::new());
    type Field = fn(&crate::report::Traffic) -> f64;
    let traffic: [(&str, &str, &str, Field); 8] = [
        ("tx_packets_total", "counter", "Packets sent into the tunnels (inner).", |t| t.tx_packets as f64),
        ("tx_bytes_total", "counter", "Bytes of inner packets sent into the tunnels.", |t| t.tx_bytes as f64),
        ("rx_packets_total", "counter", "Packets received from the tunnels (inner).", |t| t.rx_packets as f64),
        ("rx_bytes_total", "counter", "Bytes of inner packets received from the tunnels.", |t| t.rx_bytes as f64),
        ("tx_bits_per_second", "gauge", "Rate into the tunnels over the last second.", |t| t.tx_bps),
        ("rx_bits_per_second", "gauge", "Rate out of the tunnels over the last second.", |t| t.rx_bps),
        ("tx_packets_per_second", "gauge", "Packets into the tunnels per second.", |t| t.tx_pps),
        ("rx_packets_per_second", "gauge", "Packets out of the tunnels per second.", |t| t.rx_pps),
    ];
    for (name, kind, help, f) in traffic {
        w.family(&format!("gateway_{name}"), kind, help);
        for g in &stats.gateways {
            w.sample(&format!("gateway_{name}"), &[("gateway", &g.name)], f(&g.traffic));
        }
        w.family(&format!("tunnel_{name}"), kind, help);
        for t in &stats.tunnels {
            w.sample(&format!("tunnel_{name}"), &[("gateway", &t.gateway), ("tunnel", &t.name)], f(&t.traffic));
        }
    }
    w.family("gateway_bandwidth_limit_bits_per_second", "gauge", "The gateway's bandwidth limit, each way.");
    for g in &stats.gateways {
        if let Some(b) = g.bandwidth_bps {
            w.sample("gateway_bandwidth_limit_bits_per_second", &[("gateway", &g.name)], b as f64);
        }
    }
    w.family("gateway_utilisation_ratio", "gauge", "The rate as a share of the bandwidth limit, per direction.");
    for g in &stats.gateways {
        for (dir, u) in [("tx", g.tx_utilisation_percent), ("rx", g.rx_utilisation_percent)] {
            if let Some(u) = u {
                w.sample("gateway_utilisation_ratio", &[("gateway", &g.name), ("direction", dir)], u / 100.0);
            }
        }
    }
    w.family("gateway_drops_total", "counter", "Packets dropped, by reason (the gateway's and its tunnels' SAs').");
    for g in &stats.gateways {
        for (reason, n) in &g.drops {
            w.sample("gateway_drops_total", &[("gateway", &g.name), ("reason", reason)], *n as f64);
        }
    }
    w.family("tunnel_drops_total", "counter", "Packets dropped on the tunnel's SAs, by reason.");
    for t in &stats.tunnels {
        for (reason, n) in &t.drops {
            w.sample(
                "tunnel_drops_total",
                &[("gateway", &t.gateway), ("tunnel", &t.name), ("reason", reason)],
                *n as f64,
            );
        }
    }
    w.family("tunnel_up", "gauge", "1 if the tunnel carries traffic (up, and its health check passes).");
    for t in &stats.tunnels {
        w.sample("tunnel_up", &[("gateway", &t.gateway), ("tunnel", &t.name)], if t.up { 1.0 } else { 0.0 });
    }
    type Health = fn(&crate::health::HealthView) -> Option<f64>;
    let health: [(&str, &str, &str, Health); 5] = [
        ("tunnel_probe_loss_ratio", "gauge", "Health-check probes lost, of the last 10.", |h| {
            Some(h.loss_percent / 100.0)
        }),
        ("tunnel_probe_delay_seconds", "gauge", "Mean round trip of the last answered probes.", |h| {
            h.delay_ms.map(|d| d / 1000.0)
        }),
        ("tunnel_probes_sent_total", "counter", "Health-check probes sent.", |h| Some(h.probes_sent as f64)),
        ("tunnel_probes_answered_total", "counter", "Health-check probes answered in time.", |h| {
            Some(h.probes_answered as f64)
        }),
        ("tunnel_probes_lost_total", "counter", "Health-check probes not answered in time.", |h| {
            Some(h.probes_lost as f64)
        }),
    ];
    for (name, kind, help, f) in health {
        w.family(name, kind, help);
        for t in &stats.tunnels {
            if let Some(v) = t.health.as_ref().and_then(f) {
                w.sample(name, &[("gateway", &t.gateway), ("tunnel", &t.name)], v);
            }
        }
    }
    w.family("worker_rx_frames_total", "counter", "Frames a worker received.");
    for x in &report.workers {
        w.sample("worker_rx_frames_total", &[("worker", &x.worker.to_string())], x.rx_frames as f64);
    }
    w.family("worker_tx_frames_total", "counter", "Frames a worker sent.");
    for x in &report.workers {
        w.sample("worker_tx_frames_total", &[("worker", &x.worker.to_string())], x.tx_frames as f64);
    }
    w.family("worker_burst_latency_seconds", "gauge", "Burst processing time percentiles.");
    for x in &report.workers {
        let id = x.worker.to_string();
        for (q, ns) in [("0.5", x.latency_p50_ns), ("0.99", x.latency_p99_ns), ("1", x.latency_max_ns)] {
            w.sample("worker_burst_latency_seconds", &[("worker", &id), ("quantile", q)], ns as f64 / 1e9);
        }
    }
    w.0
}

/// Binds the endpoint (errors name the address).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| std::io::Error::new(e.kind(), format!("metrics endpoint {addr}: {e}")))
}

/// Serves `GET /metrics` on `listener` until `stop`, one connection at a
/// time (a scraper is one client; a slow one waits at most 5 s).
pub fn serve(listener: TcpListener, calls: SyncSender<Call>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    listener.set_nonblocking(true).expect("a listening socket can be made non-blocking");
    std::thread::Builder::new()
        .name("vpngw-metrics".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => answer(s, &calls),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .expect("the metrics thread starts")
}

fn answer(stream: TcpStream, calls: &SyncSender<Call>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(mut out) = stream.try_clone() else { return };
    let mut reader = BufReader::new(std::io::Read::take(stream, 16 << 10));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The headers, up to the blank line (none of them matter here).
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => match ask(calls) {
            Some(text) => ("200 OK", text),
            None => ("503 Service Unavailable", "the daemon did not answer\n".to_string()),
        },
        ("GET", _) => ("404 Not Found", "only /metrics is served here\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = out.write_all(head.as_bytes()).and_then(|()| out.write_all(body.as_bytes()));
}

/// The metrics text from the control thread.
fn ask(calls: &SyncSender<Call>) -> Option<String> {
    let (tx, rx) = mpsc::sync_channel::<Response>(1);
    let envelope = Envelope { version: VERSION, id: None, request: Request::Metrics };
    calls.send(Call { envelope, reply: tx }).ok()?;
    let r = rx.recv_timeout(Duration::from_secs(10)).ok()?;
    r.result?.get("text")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{GatewayTraffic, TunnelTraffic};

    #[test]
    fn label_values_are_escaped_and_every_family_is_typed() {
        let stats = Stats {
            gateways: vec![GatewayTraffic { name: "gw".into(), bandwidth_bps: Some(5_000_000), ..Default::default() }],
            tunnels: vec![TunnelTraffic {
                name: "t\"1\\\n".into(),
                gateway: "gw".into(),
                up: true,
                ..Default::default()
            }],
        };
        let text = render(&stats, &Report::default());
        assert!(text.contains("vpngw_tunnel_up{gateway=\"gw\",tunnel=\"t\\\"1\\\\\\n\"} 1\n"), "{text}");
        assert!(text.contains("vpngw_gateway_bandwidth_limit_bits_per_second{gateway=\"gw\"} 5000000\n"));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split('{').next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} has a TYPE line");
        }
    }
}
