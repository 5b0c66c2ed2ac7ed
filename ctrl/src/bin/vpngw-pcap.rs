//! `vpngw-pcap`: runs the gateway's own ESP code over a capture file, so an
//! operator can encrypt test traffic for a peer, or decrypt what a peer sent
//! and see exactly which packets vpngw would accept and why the others drop.

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use vpngw_engine::esp::{self, MAX_HEADROOM, MAX_TAILROOM};
use vpngw_engine::pcap::{LinkType, PcapReader, PcapWriter, Record};
use vpngw_engine::sa::LifetimeEvent;
use vpngw_engine::sad::InboundSad;
use vpngw_engine::stats::DropCounters;
use vpngw_engine::wire::ether::{ethertype, ethertype_for_ip, EthernetFrame};
use vpngw_engine::wire::ipv4::Ipv4Packet;
use vpngw_engine::wire::ipv6::Ipv6Packet;
use vpngw_engine::{Direction, DropReason, InboundSa, NatT, OutboundSa, PacketBuf, SaConfig, Suite};

const EXAMPLES: &str = "\
Examples:
  vpngw-pcap encap --spi 0x1001 --suite aes-gcm-128 --key 00112233445566778899aabbccddeeff01020304 \\
      --src 192.0.2.1 --dst 198.51.100.1 --natt 4500:4500 plain.pcap esp.pcap
  vpngw-pcap decap --spi 0x1001 --suite aes-gcm-128 --key 00112233445566778899aabbccddeeff01020304 \\
      esp.pcap plain.pcap

Input may be an Ethernet (link type 1) or raw-IP (101, 228, 229) pcap. Ethernet
output keeps each frame's own MACs and VLAN tag; raw-IP output is link type 101.
Exit status: 0 if every packet went through, 1 if any was dropped, 2 on bad
arguments or an unreadable file.";

/// Encrypt or decrypt a capture file with vpngw's ESP (RFC 4303 tunnel mode).
#[derive(Parser)]
#[command(name = "vpngw-pcap", version, after_help = EXAMPLES)]
struct Cli {
    /// Print one JSON object per packet and a summary object, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encapsulate every IP packet of IN into ESP and write them to OUT.
    Encap(EncapArgs),
    /// Decapsulate the ESP packets of IN through one inbound SA, in file
    /// order (so replay and ESN behave as on the wire), and write the inner
    /// packets that were accepted to OUT.
    Decap(DecapArgs),
}

#[derive(Args)]
struct SaArgs {
    /// Security parameter index, decimal or 0x-hex (256 and above).
    #[arg(long, value_parser = parse_spi)]
    spi: u32,
    /// aes-gcm-128, aes-gcm-256, chacha20-poly1305, aes-cbc-128-hmac-sha256
    /// or aes-cbc-256-hmac-sha256.
    #[arg(long)]
    suite: Suite,
    /// Keying material in hex: for the AEADs the key followed by the 4-byte
    /// salt (RFC 4106 / RFC 7634), 20 bytes for aes-gcm-128, 36 for the
    /// others; for AES-CBC the encryption key followed by the 32-byte
    /// HMAC-SHA-256 key, 48 or 64 bytes.
    #[arg(long, value_parser = parse_hex)]
    key: HexBytes,
    /// Extended (64-bit) sequence numbers, RFC 4303 section 2.2.1.
    #[arg(long)]
    esn: bool,
}

#[derive(Args)]
struct EncapArgs {
    #[command(flatten)]
    sa: SaArgs,
    /// Outer source address (this gateway's tunnel endpoint).
    #[arg(long)]
    src: IpAddr,
    /// Outer destination address (the peer's tunnel endpoint).
    #[arg(long)]
    dst: IpAddr,
    /// ESP in UDP (RFC 3948) with SPORT:DPORT, e.g. 4500:4500.
    #[arg(long, value_parser = parse_natt, value_name = "SPORT:DPORT")]
    natt: Option<NatT>,
    /// Sequence number of the first packet (default 1).
    #[arg(long, default_value_t = 1, value_parser = parse_u64)]
    seq: u64,
    /// TTL or hop limit of the outer header.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
    /// Capture to read (plain IP packets).
    input: PathBuf,
    /// Capture to write (ESP packets).
    output: PathBuf,
}

#[derive(Args)]
struct DecapArgs {
    #[command(flatten)]
    sa: SaArgs,
    /// Replay window size, 64 to 65536.
    #[arg(long, default_value_t = 1024)]
    window: u32,
    /// Expect ESP in UDP (RFC 3948) to DPORT; SPORT is the peer's, which a
    /// NAT may change. Without it, only raw ESP is accepted.
    #[arg(long, value_parser = parse_natt, value_name = "SPORT:DPORT")]
    natt: Option<NatT>,
    /// Sequence number the first packet is expected to carry: the window
    /// starts as if N-1 were the highest received (default 1). Needed to
    /// decrypt an ESN capture that starts near 2^32.
    #[arg(long, default_value_t = 1, value_parser = parse_u64)]
    seq: u64,
    /// Accept only packets to this outer destination (default: any).
    #[arg(long)]
    dst: Option<IpAddr>,
    /// Capture to read (ESP packets).
    input: PathBuf,
    /// Capture to write (the accepted inner packets).
    output: PathBuf,
}

#[derive(Clone)]
struct HexBytes(Vec<u8>);

fn parse_hex(s: &str) -> Result<HexBytes, String> {
    vpngw_ctrl::hex::decode(s).map(HexBytes)
}

fn parse_u64(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}

fn parse_spi(s: &str) -> Result<u32, String> {
    let v = parse_u64(s)?;
    u32::try_from(v).map_err(|_| format!("{s}: an SPI is 32 bits"))
}

fn parse_natt(s: &str) -> Result<NatT, String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected SPORT:DPORT"))?;
    let port = |p: &str| p.parse::<u16>().map_err(|e| format!("{p:?}: {e}"));
    Ok(NatT { src_port: port(a)?, dst_port: port(b)? })
}

/// An error that ends the run with exit status 2.
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = match &cli.command {
        Command::Encap(a) => encap(a, cli.json),
        Command::Decap(a) => decap(a, cli.json),
    };
    match run {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Fatal(msg)) => {
            eprintln!("vpngw-pcap: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The two capture files and the per-packet report.
struct Run {
    reader: PcapReader<BufReader<File>>,
    writer: PcapWriter<BufWriter<File>>,
    json: bool,
    ok: u64,
    drops: DropCounters,
}

impl Run {
    fn open(input: &PathBuf, output: &PathBuf, json: bool) -> Result<Self, Fatal> {
        if let (Ok(i), Ok(o)) = (input.canonicalize(), output.canonicalize()) {
            if i == o {
                return Err(Fatal(format!("{}: input and output are the same file", input.display())));
            }
        }
        let f = File::open(input).map_err(|e| Fatal(format!("{}: {e}", input.display())))?;
        let reader = PcapReader::new(BufReader::new(f)).map_err(|e| Fatal(format!("{}: {e}", input.display())))?;
        let out = File::create(output).map_err(|e| Fatal(format!("{}: {e}", output.display())))?;
        // IPv4-only and IPv6-only captures may gain packets of the other
        // family (the outer header, or the inner one): write raw IP.
        let link = if reader.link_type().is_ip() { LinkType::RawIp } else { LinkType::Ethernet };
        let writer = PcapWriter::new(BufWriter::new(out), link, reader.nanos())?;
        Ok(Self { reader, writer, json, ok: 0, drops: DropCounters::default() })
    }

    /// Feeds every record's IP packet to `f`, which returns the packet to
    /// write (and a detail for the report) or a drop reason.
    fn each(
        &mut self,
        mut f: impl FnMut(&[u8], &mut Vec<LifetimeEvent>) -> Result<(Vec<u8>, u64), DropReason>,
    ) -> Result<(), Fatal> {
        let link = self.reader.link_type();
        let mut n = 0u64;
        while let Some(rec) = self.reader.next_record()? {
            n += 1;
            let mut events = Vec::new();
            let r = process(link, &rec, |ip| f(ip, &mut events));
            match r {
                Ok((frame, seq)) => {
                    self.writer.write(rec.ts_sec, rec.ts_frac, &frame)?;
                    self.ok += 1;
                    self.report(json!({"packet": n, "result": "ok", "seq": seq}), format!("{n} ok"));
                }
                Err(reason) => {
                    self.drops.count(reason);
                    self.report(
                        json!({"packet": n, "result": "drop", "reason": reason.name()}),
                        format!("{n} drop {reason}"),
                    );
                }
            }
            for e in events {
                let (expiry, limit) = (e.expiry, e.limit);
                self.report(
                    json!({"packet": n, "event": format!("{expiry}-expiry"), "limit": limit.to_string(), "spi": e.spi}),
                    format!("{n} event {expiry}-expiry {limit} spi {:#x}", e.spi),
                );
            }
        }
        self.writer.flush()?;
        let total = self.ok + self.drops.total();
        let by_reason: serde_json::Map<_, _> =
            self.drops.nonzero().map(|(r, c)| (r.name().to_string(), json!(c))).collect();
        let reasons: Vec<String> = self.drops.nonzero().map(|(r, c)| format!("{r} {c}")).collect();
        self.report(
            json!({"summary": {"packets": total, "ok": self.ok, "dropped": self.drops.total(), "drops": by_reason}}),
            format!(
                "summary: {total} packets, {} ok, {} dropped{}",
                self.ok,
                self.drops.total(),
                if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) }
            ),
        );
        Ok(())
    }

    fn report(&self, json: serde_json::Value, text: String) {
        if self.json {
            println!("{json}");
        } else {
            println!("{text}");
        }
    }
}

/// The length of the IP packet at the start of `bytes` (which may hold
/// link padding after it).
fn ip_len(bytes: &[u8]) -> Option<usize> {
    match bytes.first()? >> 4 {
        4 => Ipv4Packet::new_checked(bytes).ok().map(|p| p.total_len()),
        6 => Ipv6Packet::new_checked(bytes).ok().map(|p| p.total_len()),
        _ => None,
    }
}

/// Strips the link header of a record, runs `f` on the IP packet, and puts
/// the link header back (with the EtherType of what `f` returned).
fn process(
    link: LinkType,
    rec: &Record,
    f: impl FnOnce(&[u8]) -> Result<(Vec<u8>, u64), DropReason>,
) -> Result<(Vec<u8>, u64), DropReason> {
    if !rec.is_complete() {
        return Err(DropReason::Malformed);
    }
    match link {
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => f(&rec.data),
        LinkType::Ethernet => {
            let eth = EthernetFrame::new_checked(&rec.data[..]).map_err(|_| DropReason::Malformed)?;
            if ![ethertype::IPV4, ethertype::IPV6].contains(&eth.ethertype()) {
                return Err(DropReason::NotIp);
            }
            let hl = eth.header_len();
            // Frames below 60 bytes carry padding after the IP packet.
            let len = ip_len(eth.payload()).ok_or(DropReason::Malformed)?;
            let (ip, seq) = f(&eth.payload()[..len])?;
            let mut frame = rec.data[..hl].to_vec();
            frame.extend_from_slice(&ip);
            let ethertype = ethertype_for_ip(&ip).ok_or(DropReason::Malformed)?;
            EthernetFrame::new_checked(&mut frame[..]).expect("header copied").set_ethertype(ethertype);
            Ok((frame, seq))
        }
    }
}

fn check_seq(seq: u64, esn: bool) -> Result<(), Fatal> {
    if seq == 0 {
        return Err(Fatal("--seq 0: sequence numbers start at 1 (RFC 4303 section 3.3.3)".into()));
    }
    if !esn && seq > u32::MAX as u64 {
        return Err(Fatal(format!("--seq {seq:#x} needs --esn: without ESN sequence numbers are 32 bits")));
    }
    Ok(())
}

fn encap(a: &EncapArgs, json: bool) -> Result<bool, Fatal> {
    let mut cfg = SaConfig::new(a.sa.spi, Direction::Outbound, a.sa.suite, a.src, a.dst);
    cfg.esn = a.sa.esn;
    cfg.natt = a.natt;
    cfg.outer_ttl = a.ttl;
    check_seq(a.seq, a.sa.esn)?;
    let mut sa = OutboundSa::new(cfg, &a.sa.key.0, 0)?.with_next_seq(a.seq);
    let mut run = Run::open(&a.input, &a.output, json)?;
    run.each(|ip, events| {
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(ip, MAX_HEADROOM, MAX_TAILROOM);
        let seq = esp::encap(&mut sa, &mut pkt, 0, events)?;
        Ok((pkt.data().to_vec(), seq))
    })?;
    Ok(run.drops.total() == 0)
}

fn decap(a: &DecapArgs, json: bool) -> Result<bool, Fatal> {
    let unspecified: IpAddr = "0.0.0.0".parse().expect("literal");
    let local = a.dst.unwrap_or(unspecified);
    let mut cfg = SaConfig::new(a.sa.spi, Direction::Inbound, a.sa.suite, local, local);
    cfg.esn = a.sa.esn;
    cfg.natt = a.natt;
    cfg.replay_window = a.window;
    check_seq(a.seq, a.sa.esn)?;
    let mut sa = InboundSa::new(cfg, &a.sa.key.0, 0)?;
    sa.state.window.start_after(a.seq.saturating_sub(1));
    let mut sad = InboundSad::default();
    sad.insert(sa)?;
    let mut run = Run::open(&a.input, &a.output, json)?;
    run.each(|ip, events| {
        let mut pkt = PacketBuf::<Vec<u8>>::with_room(ip, 0, 0);
        let r = sad.receive(&mut pkt, 0, events)?;
        Ok((pkt.data().to_vec(), r.seq))
    })?;
    Ok(run.drops.total() == 0)
}
