//! ESP encapsulation and decapsulation on one core, per suite and inner
//! packet size, next to the raw speed of the same crates on the same
//! buffer size (the AEAD; or AES-CBC and HMAC-SHA-256 over the whole blocks
//! of the buffer), measured in the same run.
//!
//! Every packet is processed in place in a frame with headroom, as on the
//! data path. Untimed work between batches (restoring plaintext, sealing
//! the packets a decap batch will open) is excluded from the timings.

use crate::plot::{Chart, Series};
use crate::report::Doc;
use crate::{median, print_targets, rate, Table, Target};
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::hint::black_box;
use std::time::{Duration, Instant};
use vpngw_engine::esp::{self, MAX_HEADROOM};
use vpngw_engine::sad::InboundSad;
use vpngw_engine::wire::ipv4::Ipv4Repr;
use vpngw_engine::{Direction, InboundSa, OutboundSa, PacketBuf, SaConfig, Suite};

/// Packets per timed batch: a burst-sized multiple that keeps the frames in
/// L2 (256 x 2 KiB).
const BATCH: usize = 256;
const FRAME: usize = 2048;
pub const SIZES: [usize; 3] = [64, 512, 1400];

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub suite: &'static str,
    /// Inner packet size in bytes.
    pub size: usize,
    /// "encap" or "decap".
    pub op: &'static str,
    pub mpps: f64,
    pub gbps: f64,
    /// Raw AEAD seal (for encap) or open (for decap) of `size` bytes.
    pub raw_mpps: f64,
    pub raw_gbps: f64,
    /// ESP rate over raw AEAD rate.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub rounds: usize,
    pub round_ms: u64,
    pub results: Vec<Row>,
    pub targets: Vec<Target>,
}

/// The raw cipher, as the crates provide it: the baseline ESP is held to.
#[allow(clippy::large_enum_variant)] // as in the engine: one per SA, inline
pub(crate) enum Raw {
    Gcm128(Aes128Gcm),
    Gcm256(Aes256Gcm),
    ChaCha(ChaCha20Poly1305),
    /// AES-CBC (the key) and HMAC-SHA-256, encrypt-then-MAC.
    Cbc128([u8; 16], Hmac<Sha256>),
    Cbc256([u8; 32], Hmac<Sha256>),
}

impl Raw {
    pub(crate) fn new(suite: Suite, key: &[u8]) -> Self {
        let aead = &key[..key.len().saturating_sub(4)];
        let (enc, mac) = key.split_at(key.len().saturating_sub(32));
        let hmac = || <Hmac<Sha256> as Mac>::new_from_slice(mac).unwrap();
        match suite {
            Suite::AesGcm128 => Raw::Gcm128(Aes128Gcm::new_from_slice(aead).unwrap()),
            Suite::AesGcm256 => Raw::Gcm256(Aes256Gcm::new_from_slice(aead).unwrap()),
            Suite::ChaCha20Poly1305 => Raw::ChaCha(ChaCha20Poly1305::new_from_slice(aead).unwrap()),
            Suite::AesCbc128HmacSha256 => Raw::Cbc128(enc.try_into().unwrap(), hmac()),
            Suite::AesCbc256HmacSha256 => Raw::Cbc256(enc.try_into().unwrap(), hmac()),
        }
    }

    pub(crate) fn seal(&self, nonce: &[u8; 12], buf: &mut [u8]) -> [u8; 16] {
        let n = nonce.into();
        let aad = [0u8; 8];
        let iv = [7u8; 16];
        let blocks = buf.len() / 16 * 16;
        let mac = |m: &Hmac<Sha256>, buf: &[u8]| {
            let mut m = m.clone();
            m.update(buf);
            m.finalize().into_bytes()[..16].try_into().unwrap()
        };
        match self {
            Raw::Gcm128(c) => c.encrypt_in_place_detached(n, &aad, buf),
            Raw::Gcm256(c) => c.encrypt_in_place_detached(n, &aad, buf),
            Raw::ChaCha(c) => c.encrypt_in_place_detached(n, &aad, buf),
            Raw::Cbc128(k, m) => {
                let _ = cbc::Encryptor::<aes::Aes128>::new(k.into(), &iv.into())
                    .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf[..blocks], blocks);
                return mac(m, buf);
            }
            Raw::Cbc256(k, m) => {
                let _ = cbc::Encryptor::<aes::Aes256>::new(k.into(), &iv.into())
                    .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf[..blocks], blocks);
                return mac(m, buf);
            }
        }
        .unwrap()
        .into()
    }

    pub(crate) fn open(&self, nonce: &[u8; 12], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        let n = nonce.into();
        let aad = [0u8; 8];
        let iv = [7u8; 16];
        let blocks = buf.len() / 16 * 16;
        let verify = |m: &Hmac<Sha256>, buf: &[u8]| {
            let mut m = m.clone();
            m.update(buf);
            m.verify_truncated_left(tag).is_ok()
        };
        match self {
            Raw::Gcm128(c) => c.decrypt_in_place_detached(n, &aad, buf, tag.into()),
            Raw::Gcm256(c) => c.decrypt_in_place_detached(n, &aad, buf, tag.into()),
            Raw::ChaCha(c) => c.decrypt_in_place_detached(n, &aad, buf, tag.into()),
            Raw::Cbc128(k, m) => {
                let ok = verify(m, buf);
                let _ = cbc::Decryptor::<aes::Aes128>::new(k.into(), &iv.into())
                    .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf[..blocks]);
                return ok;
            }
            Raw::Cbc256(k, m) => {
                let ok = verify(m, buf);
                let _ = cbc::Decryptor::<aes::Aes256>::new(k.into(), &iv.into())
                    .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf[..blocks]);
                return ok;
            }
        }
        .is_ok()
    }
}

fn inner_packet(size: usize) -> Vec<u8> {
    let mut p = vec![0x5au8; size];
    Ipv4Repr {
        src: "10.1.0.5".parse().unwrap(),
        dst: "172.16.1.9".parse().unwrap(),
        protocol: 17,
        payload_len: size - 20,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p);
    p
}

/// One suite and size: encap, decap, raw seal and raw open, interleaved.
struct Case {
    suite: Suite,
    size: usize,
    inner: Vec<u8>,
    out: OutboundSa,
    sad: InboundSad,
    raw: Raw,
    frames: Vec<Vec<u8>>,
    tags: Vec<[u8; 16]>,
}

impl Case {
    fn new(suite: Suite, size: usize) -> Self {
        let key: Vec<u8> = (0..suite.keymat_len() as u8).collect();
        let (a, b) = ("192.0.2.1".parse().unwrap(), "198.51.100.1".parse().unwrap());
        let out = SaConfig::new(0x1001, Direction::Outbound, suite, a, b);
        let mut inb = out.clone();
        inb.direction = Direction::Inbound;
        (inb.local, inb.remote) = (b, a);
        let mut sad = InboundSad::default();
        sad.insert(InboundSa::new(inb, &key, 0).unwrap()).unwrap();
        Self {
            suite,
            size,
            inner: inner_packet(size),
            out: OutboundSa::new(out, &key, 0).unwrap(),
            sad,
            raw: Raw::new(suite, &key),
            frames: vec![vec![0u8; FRAME]; BATCH],
            tags: vec![[0u8; 16]; BATCH],
        }
    }

    fn encap_batch(&mut self) -> Duration {
        let mut pkts: Vec<PacketBuf<&mut [u8]>> = self
            .frames
            .iter_mut()
            .map(|f| {
                f[MAX_HEADROOM..MAX_HEADROOM + self.inner.len()].copy_from_slice(&self.inner);
                PacketBuf::new(&mut f[..], MAX_HEADROOM, self.inner.len()).unwrap()
            })
            .collect();
        let mut ev = Vec::new();
        let t = Instant::now();
        for p in &mut pkts {
            black_box(esp::encap(&mut self.out, p, 0, &mut ev).unwrap());
        }
        t.elapsed()
    }

    fn decap_batch(&mut self) -> Duration {
        let mut ev = Vec::new();
        let mut pkts: Vec<PacketBuf<&mut [u8]>> = self
            .frames
            .iter_mut()
            .map(|f| {
                f[MAX_HEADROOM..MAX_HEADROOM + self.inner.len()].copy_from_slice(&self.inner);
                let mut p = PacketBuf::new(&mut f[..], MAX_HEADROOM, self.inner.len()).unwrap();
                esp::encap(&mut self.out, &mut p, 0, &mut ev).unwrap();
                p
            })
            .collect();
        let t = Instant::now();
        for p in &mut pkts {
            black_box(self.sad.receive(p, 0, &mut ev).unwrap());
        }
        t.elapsed()
    }

    fn seal_batch(&mut self) -> Duration {
        let nonce = [7u8; 12];
        let n = self.size;
        let t = Instant::now();
        for (f, tag) in self.frames.iter_mut().zip(&mut self.tags) {
            *tag = self.raw.seal(&nonce, &mut f[MAX_HEADROOM..MAX_HEADROOM + n]);
        }
        t.elapsed()
    }

    fn open_batch(&mut self) -> Duration {
        self.seal_batch();
        let nonce = [7u8; 12];
        let n = self.size;
        let t = Instant::now();
        for (f, tag) in self.frames.iter_mut().zip(&self.tags) {
            assert!(self.raw.open(&nonce, &mut f[MAX_HEADROOM..MAX_HEADROOM + n], tag));
        }
        t.elapsed()
    }
}

/// Runs the benchmark for these suites and inner sizes: `rounds` rounds of
/// `round` per measurement.
pub fn run(suites: &[Suite], sizes: &[usize], rounds: usize, round: Duration, progress: impl Fn(&str)) -> Report {
    let mut results = Vec::new();
    for &suite in suites {
        for &size in sizes {
            progress(&format!("esp: {suite} {size} B"));
            let mut c = Case::new(suite, size);
            let (mut enc, mut dec, mut seal, mut open) = (vec![], vec![], vec![], vec![]);
            for _ in 0..rounds {
                enc.push(rate(round, BATCH, || c.encap_batch()));
                seal.push(rate(round, BATCH, || c.seal_batch()));
                dec.push(rate(round, BATCH, || c.decap_batch()));
                open.push(rate(round, BATCH, || c.open_batch()));
            }
            for (op, esp, raw) in [("encap", median(enc), median(seal)), ("decap", median(dec), median(open))] {
                let gbps = |pps: f64| pps * size as f64 * 8.0 / 1e9;
                results.push(Row {
                    suite: c.suite.name(),
                    size,
                    op,
                    mpps: esp / 1e6,
                    gbps: gbps(esp),
                    raw_mpps: raw / 1e6,
                    raw_gbps: gbps(raw),
                    ratio: esp / raw,
                });
            }
        }
    }
    let targets = targets(&results);
    Report { bench: "esp", rounds, round_ms: round.as_millis() as u64, results, targets }
}

fn targets(rows: &[Row]) -> Vec<Target> {
    let mut t = Vec::new();
    for r in rows.iter().filter(|r| r.size == 1400) {
        t.push(Target {
            what: format!("{} {} 1400 B vs raw AEAD", r.suite, r.op),
            want: ">= 0.90".into(),
            got: format!("{:.3}", r.ratio),
            met: r.ratio >= 0.90,
        });
    }
    if let Some(r) = rows.iter().find(|r| r.suite == "aes-gcm-128" && r.size == 64 && r.op == "encap") {
        t.push(Target {
            what: "aes-gcm-128 encap 64 B, one core".into(),
            want: ">= 10 Mpps".into(),
            got: format!("{:.2} Mpps", r.mpps),
            met: r.mpps >= 10.0,
        });
    }
    t
}

fn table(report: &Report) -> Table {
    let rows = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.suite.into(),
                r.size.to_string(),
                r.op.into(),
                format!("{:.2}", r.mpps),
                format!("{:.2}", r.gbps),
                format!("{:.2}", r.raw_mpps),
                format!("{:.2}", r.raw_gbps),
                format!("{:.3}", r.ratio),
            ]
        })
        .collect();
    Table::new(&["suite", "bytes", "op", "Mpps", "Gbit/s", "raw Mpps", "raw Gbit/s", "esp/raw"], rows)
}

pub fn print(report: &Report) {
    println!(
        "ESP on one core, inner packet sizes; raw = the same crates (AEAD, or AES-CBC and HMAC) on a buffer of the same size, same run \
         (median of {} rounds of {} ms)",
        report.rounds, report.round_ms
    );
    table(report).print();
    println!();
    print_targets(&report.targets);
}

/// The run written up: the table, and Gbit/s against size per suite next
/// to the raw cipher's.
pub fn doc(report: &Report) -> Doc {
    let mut doc = Doc::new(
        "ESP on one core",
        format!(
            "Encap and decap per suite and inner packet size, next to the same crates' raw speed on a buffer of \
             the same size, measured in the same run (median of {} rounds of {} ms).",
            report.rounds, report.round_ms
        ),
    );
    doc.table("Results", "", &table(report));
    for op in ["encap", "decap"] {
        let mut series = Vec::new();
        for suite in Suite::ALL.map(|s| s.name()) {
            let rows: Vec<&Row> = report.results.iter().filter(|r| r.suite == suite && r.op == op).collect();
            if rows.is_empty() {
                continue;
            }
            series.push(Series { name: suite.into(), points: rows.iter().map(|r| (r.size as f64, r.gbps)).collect() });
            series.push(Series {
                name: format!("{suite} raw"),
                points: rows.iter().map(|r| (r.size as f64, r.raw_gbps)).collect(),
            });
        }
        doc.charts.push((
            op,
            Chart {
                title: format!("ESP {op} Gbit/s vs inner packet size, one core"),
                x_label: "inner packet bytes".into(),
                y_label: "Gbit/s".into(),
                x_log: true,
                y_log: false,
                series,
            },
        ));
    }
    doc.targets = report.targets.clone();
    doc
}
