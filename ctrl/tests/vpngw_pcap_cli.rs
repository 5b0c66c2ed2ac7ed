//! `vpngw-pcap` as an operator meets it: bad arguments and broken files get
//! a clear message and exit status 2, drops give exit status 1 with a
//! verdict per packet, and a clean run exits 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vpngw_engine::pcap::{LinkType, PcapWriter};
use vpngw_engine::wire::ipv4::Ipv4Repr;

const KEY: &str = "000102030405060708090a0b0c0d0e0f10111213";

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vpngw-pcap")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    // Under target/tmp: cargo provides it for integration tests.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vpngw-pcap-cli");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn write_pcap(path: &Path, packets: &[Vec<u8>]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap(), LinkType::RawIp, false).unwrap();
    for p in packets {
        w.write(0, 0, p).unwrap();
    }
}

fn ping(n: u8) -> Vec<u8> {
    let mut p = vec![n; 28];
    Ipv4Repr {
        src: "10.1.0.5".parse().unwrap(),
        dst: "172.16.1.9".parse().unwrap(),
        protocol: 1,
        payload_len: 8,
        ttl: 64,
        tos: 0,
        ident: n as u16,
        dont_frag: false,
    }
    .emit(&mut p);
    p
}

fn sa<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--spi", "0x1001", "--suite", "aes-gcm-128", "--key", KEY];
    v.extend_from_slice(rest);
    v
}

#[test]
fn round_trip_with_verdicts_and_exit_codes() {
    let (plain, esp, back) = (scratch("rt-plain.pcap"), scratch("rt-esp.pcap"), scratch("rt-back.pcap"));
    write_pcap(&plain, &[ping(1), ping(2), vec![0x99; 5]]);
    let (p, e, b) = (plain.to_str().unwrap(), esp.to_str().unwrap(), back.to_str().unwrap());

    let mut args = vec!["encap"];
    args.extend(sa(&["--src", "192.0.2.1", "--dst", "198.51.100.1", p, e]));
    let o = tool(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("3 drop malformed"), "{}", text(&o));
    assert!(text(&o).contains("summary: 3 packets, 2 ok, 1 dropped (malformed 1)"), "{}", text(&o));

    let mut args = vec!["--json", "decap"];
    args.extend(sa(&[e, b]));
    let o = tool(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let last: serde_json::Value = serde_json::from_str(text(&o).lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["ok"], 2);
    let back = std::fs::read(&back).unwrap();
    assert!(back.windows(28).any(|w| w == ping(2).as_slice()), "the inner packet came back");
}

/// Each case is a command line (`KEY` stands for a valid 20-byte key) and
/// what its error message must say.
#[test]
fn bad_arguments_are_refused_clearly() {
    const SA: &str = "--spi 0x1001 --suite aes-gcm-128 --key KEY";
    const TUNNEL: &str = "--src 192.0.2.1 --dst 198.51.100.1";
    let cases = [
        ("decap --spi 0x1001 --suite aes-cbc --key KEY a b".to_string(), "unknown suite"),
        ("decap --spi 0x1001 --suite aes-gcm-128 --key abc a b".into(), "odd number of hex digits"),
        ("decap --spi 0x1001 --suite aes-gcm-128 --key zz a b".into(), "not hex"),
        ("decap --spi 0x1001 --suite aes-gcm-128 --key a\u{e9}b a b".into(), "not hex"),
        ("decap --spi 0x1001 --suite aes-gcm-128 --key +f+f a b".into(), "not hex"),
        ("decap --spi 0x1001 --suite aes-gcm-256 --key KEY a b".into(), "needs 36 bytes"),
        ("decap --spi 7 --suite aes-gcm-128 --key KEY a b".into(), "reserved"),
        ("decap --spi 0x1ffffffff --suite aes-gcm-128 --key KEY a b".into(), "32 bits"),
        (format!("decap {SA} --window 10 a b"), "replay window 10"),
        (format!("decap {SA} --seq 0 a b"), "start at 1"),
        (format!("decap {SA} --seq 0x100000000 a b"), "needs --esn"),
        (format!("decap {SA} /nonexistent/in.pcap b"), "/nonexistent/in.pcap"),
        (format!("encap {SA} --src 192.0.2.1 --dst 2001:db8::1 a b"), "not of one address family"),
        (format!("encap {SA} {TUNNEL} --natt 4500 a b"), "SPORT:DPORT"),
        (format!("encap {SA} {TUNNEL} --seq 0x100000000 a b"), "needs --esn"),
    ];
    for (line, want) in cases {
        let args: Vec<&str> = line.split_whitespace().map(|a| if a == "KEY" { KEY } else { a }).collect();
        let o = tool(&args);
        assert_eq!(o.status.code(), Some(2), "{line}: {}", text(&o));
        assert!(text(&o).contains(want), "{line}: expected {want:?} in {}", text(&o));
    }
}

#[test]
fn broken_files_are_refused_clearly() {
    let (ng, cut, garbage, out) = (scratch("ng.pcap"), scratch("cut.pcap"), scratch("garbage.pcap"), scratch("o.pcap"));
    let mut bytes = 0x0a0d0d0au32.to_le_bytes().to_vec();
    bytes.resize(64, 0);
    std::fs::write(&ng, &bytes).unwrap();
    write_pcap(&cut, &[ping(1)]);
    let mut b = std::fs::read(&cut).unwrap();
    b.truncate(b.len() - 3);
    std::fs::write(&cut, &b).unwrap();
    std::fs::write(&garbage, b"this is not a capture file at all").unwrap();
    for (file, want) in [(&ng, "pcapng"), (&cut, "file ends inside record 0"), (&garbage, "not a pcap file")] {
        let mut args = vec!["decap"];
        args.extend(sa(&[file.to_str().unwrap(), out.to_str().unwrap()]));
        let o = tool(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(want), "expected {want:?} in {}", text(&o));
    }
}

#[test]
fn input_and_output_may_not_be_one_file() {
    let f = scratch("same.pcap");
    write_pcap(&f, &[ping(1)]);
    let mut args = vec!["decap"];
    args.extend(sa(&[f.to_str().unwrap(), f.to_str().unwrap()]));
    let o = tool(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("the same file"), "{}", text(&o));
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 24 + 16 + 28, "the input is intact");
}

/// Ethernet frames below 60 bytes carry padding after the IP packet; ARP is
/// not IP. NAT-T captures decrypt with --natt, and only with it.
#[test]
fn ethernet_padding_arp_and_natt() {
    let (plain, esp, back) = (scratch("eth-plain.pcap"), scratch("eth-esp.pcap"), scratch("eth-back.pcap"));
    let frame = |ethertype: [u8; 2], payload: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, ethertype[0], ethertype[1]];
        f.extend_from_slice(payload);
        f.resize(f.len().max(60), 0);
        f
    };
    let mut w = PcapWriter::new(std::fs::File::create(&plain).unwrap(), LinkType::Ethernet, false).unwrap();
    w.write(0, 0, &frame([8, 0], &ping(1))).unwrap(); // 28-byte IP in a 60-byte frame
    w.write(0, 0, &frame([8, 6], &[0; 28])).unwrap(); // ARP
    drop(w);
    let (p, e, b) = (plain.to_str().unwrap(), esp.to_str().unwrap(), back.to_str().unwrap());
    let mut args = vec!["encap"];
    args.extend(sa(&["--natt", "4500:4500", "--src", "192.0.2.1", "--dst", "198.51.100.1", p, e]));
    let o = tool(&args);
    assert!(text(&o).contains("1 ok\n2 drop not-ip"), "{}", text(&o));
    let mut args = vec!["decap"];
    args.extend(sa(&[e, b]));
    assert!(text(&tool(&args)).contains("1 drop encap-mismatch"), "raw-ESP SA refuses ESP in UDP");
    let mut args = vec!["decap"];
    args.extend(sa(&["--natt", "4500:4500", e, b]));
    let o = tool(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let back = std::fs::read(&back).unwrap();
    assert!(back.windows(28).any(|w| w == ping(1).as_slice()), "the padded frame's IP packet came back whole");
}

/// Garbage records inside a valid file are drops with a reason, not errors.
#[test]
fn garbage_packets_are_counted_drops() {
    let (inp, out) = (scratch("junk.pcap"), scratch("junk-out.pcap"));
    write_pcap(&inp, &[vec![], vec![0x45], vec![0x60; 39], vec![0x45; 60], ping(3)]);
    let mut args = vec!["decap"];
    args.extend(sa(&[inp.to_str().unwrap(), out.to_str().unwrap()]));
    let o = tool(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("summary: 5 packets, 0 ok, 5 dropped (malformed 4, not-esp 1)"), "{}", text(&o));
}

/// `--seq` lets a decap start mid-stream: ESN output that starts at
/// 2^32 - 2 decrypts only when the receiver is told where the stream is.
#[test]
fn esn_decap_starts_where_encap_started() {
    let (plain, esp, back) = (scratch("esn-plain.pcap"), scratch("esn-esp.pcap"), scratch("esn-back.pcap"));
    write_pcap(&plain, &[ping(1), ping(2), ping(3), ping(4)]);
    let (p, e, b) = (plain.to_str().unwrap(), esp.to_str().unwrap(), back.to_str().unwrap());
    let mut args = vec!["encap"];
    args.extend(sa(&["--esn", "--seq", "0xfffffffe", "--src", "192.0.2.1", "--dst", "198.51.100.1", p, e]));
    assert_eq!(tool(&args).status.code(), Some(0));
    let mut args = vec!["decap"];
    args.extend(sa(&["--esn", e, b]));
    assert_eq!(tool(&args).status.code(), Some(1), "a fresh window cannot place them");
    let mut args = vec!["decap"];
    args.extend(sa(&["--esn", "--seq", "0xfffffffe", e, b]));
    let o = tool(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
