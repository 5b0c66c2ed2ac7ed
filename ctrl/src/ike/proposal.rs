//! What the two sides of an IKE SA agree on: the proposals vpngw offers
//! and accepts for the IKE SA (encryption, PRF, Diffie-Hellman group) and
//! for its child SAs (an ESP suite the engine carries, with or without
//! PFS), written in strongSwan's proposal syntax (`aes256gcm16-prfsha256-
//! x25519`, `aes128-sha256-modp2048`), turned into SA payloads, and chosen
//! from a peer's offer.
//!
//! DES, 3DES, MD5 and the groups 1, 2 and 5 are never offered or taken; a
//! configuration naming them, or a peer offering nothing else, gets an
//! error that names the weakness. Every refusal says what each side
//! offered, so an operator reading the log sees why.

use super::crypto::{Group, Prf};
use super::message::{Proposal, Transform};
use super::sk::{Encryption, Integ};
use std::fmt;
use vpngw_engine::crypto::Suite;

/// Transform types (RFC 7296 section 3.3.2).
pub mod transform {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const DH: u8 = 4;
    pub const ESN: u8 = 5;
}

/// Protocol IDs of a proposal.
pub const PROTO_IKE: u8 = 1;
pub const PROTO_ESP: u8 = 3;

const ENCR_DES: u16 = 2;
const ENCR_3DES: u16 = 3;
const ENCR_AES_CBC: u16 = 12;
const ENCR_AES_GCM_16: u16 = 20;
const ENCR_CHACHA20_POLY1305: u16 = 28;
const INTEG_HMAC_MD5_96: u16 = 1;
const INTEG_HMAC_SHA2_256_128: u16 = 12;
const PRF_HMAC_MD5: u16 = 1;

/// An IKE SA proposal: one transform of each type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeProposal {
    pub encryption: Encryption,
    pub prf: Prf,
    pub group: Group,
}

/// A child SA proposal: the ESP suite, and the group of a PFS exchange
/// (in CREATE_CHILD_SA; the first child SA is keyed by the IKE SA's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspProposal {
    pub suite: Suite,
    pub pfs: Option<Group>,
}

/// A proposal string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("proposal {0:?}: {1} is weak and never negotiated ({2})")]
    Weak(String, String, &'static str),
    #[error("proposal {0:?}: unknown algorithm {1:?}")]
    Unknown(String, String),
    #[error("proposal {0:?}: {1}")]
    Incomplete(String, &'static str),
}

/// Why a keyword names a weak algorithm, if it does.
fn weakness(word: &str) -> Option<&'static str> {
    match word {
        "des" | "descbc" => Some("56-bit keys, broken by exhaustive search"),
        "3des" | "3descbc" => Some("64-bit blocks, open to Sweet32 collisions"),
        "md5" | "prfmd5" | "hmacmd5" => Some("MD5 collisions are practical"),
        "modp768" | "modp1024" | "modp1536" => Some("DH groups 1, 2 and 5 are within reach of precomputation"),
        _ => None,
    }
}

fn group_word(word: &str) -> Option<Group> {
    match word {
        "modp2048" => Some(Group::Modp2048),
        "ecp256" => Some(Group::Ecp256),
        "ecp384" => Some(Group::Ecp384),
        "x25519" | "curve25519" => Some(Group::Curve25519),
        _ => None,
    }
}

fn prf_word(word: &str) -> Option<Prf> {
    match word {
        "prfsha256" => Some(Prf::HmacSha256),
        "prfsha384" => Some(Prf::HmacSha384),
        "prfsha512" => Some(Prf::HmacSha512),
        _ => None,
    }
}

fn check_weak(text: &str, word: &str) -> Result<(), ProposalError> {
    match weakness(word) {
        Some(why) => Err(ProposalError::Weak(text.into(), word.into(), why)),
        None => Ok(()),
    }
}

impl IkeProposal {
    /// strongSwan's syntax: encryption (`aes128gcm16`, `aes256gcm16`, or
    /// `aes128`/`aes256` with `sha256`), PRF (`prfsha256/384/512`; with
    /// CBC it defaults to the integrity's hash, with GCM to SHA-256), and
    /// a group (`modp2048`, `ecp256`, `ecp384`, `x25519`).
    pub fn parse(text: &str) -> Result<IkeProposal, ProposalError> {
        let (mut gcm, mut cbc, mut integ, mut prf, mut group) = (None, None, None, None, None);
        for word in text.split('-') {
            check_weak(text, word)?;
            match word {
                "aes128gcm16" | "aes128gcm128" => gcm = Some(16),
                "aes256gcm16" | "aes256gcm128" => gcm = Some(32),
                "aes128" => cbc = Some(16),
                "aes256" => cbc = Some(32),
                "sha256" | "sha2_256" => integ = Some(Integ::Sha256),
                "sha384" | "sha2_384" => integ = Some(Integ::Sha384),
                "sha512" | "sha2_512" => integ = Some(Integ::Sha512),
                w => {
                    if let Some(p) = prf_word(w) {
                        prf = Some(p)
                    } else if let Some(g) = group_word(w) {
                        group = Some(g)
                    } else {
                        return Err(ProposalError::Unknown(text.into(), w.into()));
                    }
                }
            }
        }
        let encryption = match (gcm, cbc, integ) {
            (Some(key_bytes), None, None) => Encryption::AesGcm16 { key_bytes },
            (Some(_), None, Some(_)) => {
                return Err(ProposalError::Incomplete(text.into(), "AES-GCM has its own integrity; drop the sha"))
            }
            (None, Some(key_bytes), Some(integ)) => Encryption::AesCbc { key_bytes, integ },
            (None, Some(_), None) => {
                return Err(ProposalError::Incomplete(
                    text.into(),
                    "AES-CBC needs an integrity algorithm (sha256, sha384, sha512)",
                ))
            }
            (None, None, _) => return Err(ProposalError::Incomplete(text.into(), "no encryption algorithm")),
            (Some(_), Some(_), _) => {
                return Err(ProposalError::Incomplete(text.into(), "one encryption algorithm per proposal"))
            }
        };
        let group = group.ok_or(ProposalError::Incomplete(text.into(), "no Diffie-Hellman group"))?;
        // As strongSwan: without a PRF, the integrity's hash (SHA-256 with
        // GCM).
        let default_prf = match integ {
            Some(Integ::Sha384) => Prf::HmacSha384,
            Some(Integ::Sha512) => Prf::HmacSha512,
            _ => Prf::HmacSha256,
        };
        Ok(IkeProposal { encryption, prf: prf.unwrap_or(default_prf), group })
    }

    /// The transforms, in the order RFC 7296 lists them.
    fn transforms(&self) -> Vec<Transform> {
        let mut t = vec![encr_transform(self.encryption)];
        t.push(Transform::new(transform::PRF, self.prf.id()));
        if let Encryption::AesCbc { integ, .. } = self.encryption {
            t.push(Transform::new(transform::INTEG, integ.id()));
        }
        t.push(Transform::new(transform::DH, self.group.id()));
        t
    }
}

fn encr_transform(e: Encryption) -> Transform {
    match e {
        Encryption::AesGcm16 { key_bytes } => {
            Transform::with_key_length(transform::ENCR, ENCR_AES_GCM_16, key_bytes as u16 * 8)
        }
        Encryption::AesCbc { key_bytes, .. } => {
            Transform::with_key_length(transform::ENCR, ENCR_AES_CBC, key_bytes as u16 * 8)
        }
    }
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (e, i) = match self.encryption {
            Encryption::AesGcm16 { key_bytes } => (format!("aes{}gcm16", key_bytes * 8), String::new()),
            Encryption::AesCbc { key_bytes, integ } => (format!("aes{}", key_bytes * 8), format!("-{}", integ.name())),
        };
        write!(f, "{e}{i}-{}-{}", prf_name(self.prf.id()), group_name(self.group.id()))
    }
}

impl EspProposal {
    /// strongSwan's syntax: `aes128gcm16`, `aes256gcm16`,
    /// `chacha20poly1305`, `aes128-sha256` or `aes256-sha256`, and a group
    /// for PFS (`aes256gcm16-x25519`).
    pub fn parse(text: &str) -> Result<EspProposal, ProposalError> {
        let (mut cipher, mut integ, mut pfs) = (None, false, None);
        for word in text.split('-') {
            check_weak(text, word)?;
            match word {
                "aes128gcm16" | "aes128gcm128" => cipher = Some(Suite::AesGcm128),
                "aes256gcm16" | "aes256gcm128" => cipher = Some(Suite::AesGcm256),
                "chacha20poly1305" => cipher = Some(Suite::ChaCha20Poly1305),
                "aes128" => cipher = Some(Suite::AesCbc128HmacSha256),
                "aes256" => cipher = Some(Suite::AesCbc256HmacSha256),
                "sha256" | "sha2_256" => integ = true,
                w => match group_word(w) {
                    Some(g) => pfs = Some(g),
                    None => return Err(ProposalError::Unknown(text.into(), w.into())),
                },
            }
        }
        let suite = cipher.ok_or(ProposalError::Incomplete(text.into(), "no encryption algorithm"))?;
        if suite.is_aead() == integ {
            return Err(ProposalError::Incomplete(
                text.into(),
                if integ { "an AEAD has its own integrity; drop sha256" } else { "AES-CBC needs sha256" },
            ));
        }
        Ok(EspProposal { suite, pfs })
    }

    /// The transforms; `with_pfs` adds the group (CREATE_CHILD_SA only).
    fn transforms(&self, with_pfs: bool) -> Vec<Transform> {
        let mut t = vec![esp_encr_transform(self.suite)];
        if !self.suite.is_aead() {
            t.push(Transform::new(transform::INTEG, INTEG_HMAC_SHA2_256_128));
        }
        if let (true, Some(g)) = (with_pfs, self.pfs) {
            t.push(Transform::new(transform::DH, g.id()));
        }
        // No extended sequence numbers: strongSwan's libipsec refuses them.
        t.push(Transform::new(transform::ESN, 0));
        t
    }
}

fn esp_encr_transform(s: Suite) -> Transform {
    match s {
        Suite::AesGcm128 => Transform::with_key_length(transform::ENCR, ENCR_AES_GCM_16, 128),
        Suite::AesGcm256 => Transform::with_key_length(transform::ENCR, ENCR_AES_GCM_16, 256),
        Suite::ChaCha20Poly1305 => Transform::new(transform::ENCR, ENCR_CHACHA20_POLY1305),
        Suite::AesCbc128HmacSha256 => Transform::with_key_length(transform::ENCR, ENCR_AES_CBC, 128),
        Suite::AesCbc256HmacSha256 => Transform::with_key_length(transform::ENCR, ENCR_AES_CBC, 256),
    }
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.suite {
            Suite::AesGcm128 => "aes128gcm16",
            Suite::AesGcm256 => "aes256gcm16",
            Suite::ChaCha20Poly1305 => "chacha20poly1305",
            Suite::AesCbc128HmacSha256 => "aes128-sha256",
            Suite::AesCbc256HmacSha256 => "aes256-sha256",
        };
        f.write_str(name)?;
        match self.pfs {
            Some(g) => write!(f, "-{}", group_name(g.id())),
            None => Ok(()),
        }
    }
}

/// IKE proposals as an SA payload carries them (numbered from 1; `spi`
/// empty in IKE_SA_INIT, the new SPI when rekeying).
pub fn ike_offer(ours: &[IkeProposal], spi: &[u8]) -> Vec<Proposal> {
    ours.iter()
        .zip(1..)
        .map(|(p, n)| Proposal { number: n, protocol: PROTO_IKE, spi: spi.to_vec(), transforms: p.transforms() })
        .collect()
}

/// ESP proposals under our inbound `spi`; `with_pfs` for CREATE_CHILD_SA.
pub fn esp_offer(ours: &[EspProposal], spi: u32, with_pfs: bool) -> Vec<Proposal> {
    ours.iter()
        .zip(1..)
        .map(|(p, n)| Proposal {
            number: n,
            protocol: PROTO_ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms: p.transforms(with_pfs),
        })
        .collect()
}

/// Why no proposal was chosen: both offers, written out, and the weak
/// algorithms the peer offered (which vpngw never takes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no proposal chosen: we offer {ours}; the peer offers {theirs}{}", weak_note(.weak))]
pub struct NoProposal {
    pub ours: String,
    pub theirs: String,
    pub weak: Vec<String>,
}

fn weak_note(weak: &[String]) -> String {
    if weak.is_empty() {
        String::new()
    } else {
        format!(" (refused as weak: {})", weak.join(", "))
    }
}

/// The IKE proposal to take from the peer's offer: the first of ours the
/// peer also offers (our preference decides), as the single-transform
/// proposal to answer with (keeping the peer's proposal number).
pub fn choose_ike(ours: &[IkeProposal], theirs: &[Proposal]) -> Result<(IkeProposal, Proposal), NoProposal> {
    for mine in ours {
        let want = mine.transforms();
        for p in theirs.iter().filter(|p| p.protocol == PROTO_IKE) {
            if offers_all(p, &want) && only_known_kinds(p, false) {
                let answer = Proposal { number: p.number, protocol: PROTO_IKE, spi: p.spi.clone(), transforms: want };
                return Ok((*mine, answer));
            }
        }
    }
    Err(refusal(&ours.iter().map(|p| p.to_string()).collect::<Vec<_>>(), theirs))
}

/// The ESP proposal to take: the first of ours the peer also offers, with
/// the peer's SPI (our outbound SA's). `with_pfs` in CREATE_CHILD_SA,
/// where our PFS group must be among the peer's (the KE payload must then
/// be of it).
pub fn choose_esp(
    ours: &[EspProposal],
    theirs: &[Proposal],
    with_pfs: bool,
) -> Result<(EspProposal, u32, Proposal), NoProposal> {
    for mine in ours {
        let want = mine.transforms(with_pfs);
        for p in theirs.iter().filter(|p| p.protocol == PROTO_ESP && p.spi.len() == 4) {
            let no_dh = with_pfs && mine.pfs.is_none() && !offers_dh_none_or_nothing(p);
            if offers_all(p, &want) && only_known_kinds(p, true) && !no_dh {
                let spi = u32::from_be_bytes(p.spi[..4].try_into().expect("4 bytes"));
                let answer = Proposal { number: p.number, protocol: PROTO_ESP, spi: Vec::new(), transforms: want };
                return Ok((*mine, spi, answer));
            }
        }
    }
    Err(refusal(&ours.iter().map(|p| p.to_string()).collect::<Vec<_>>(), theirs))
}

/// A proposal without PFS is acceptable when the peer's either has no DH
/// transform or offers NONE (0) among them.
fn offers_dh_none_or_nothing(p: &Proposal) -> bool {
    let dh: Vec<_> = p.transforms.iter().filter(|t| t.kind == transform::DH).collect();
    dh.is_empty() || dh.iter().any(|t| t.id == 0)
}

/// Does `p` offer each of `want` (same type, ID and key length)? Without
/// integrity in `want` (an AEAD), the peer must offer none, or NONE.
fn offers_all(p: &Proposal, want: &[Transform]) -> bool {
    let has = |w: &Transform| {
        p.transforms.iter().any(|t| t.kind == w.kind && t.id == w.id && t.key_length() == w.key_length())
    };
    let integ_ok = want.iter().any(|w| w.kind == transform::INTEG)
        || p.transforms.iter().filter(|t| t.kind == transform::INTEG).all(|t| t.id == 0);
    want.iter().all(has) && integ_ok
}

/// A proposal carrying a transform type we do not know cannot be taken.
fn only_known_kinds(p: &Proposal, esp: bool) -> bool {
    p.transforms.iter().all(|t| match t.kind {
        transform::ENCR | transform::INTEG | transform::DH => true,
        transform::PRF => !esp,
        transform::ESN => esp,
        _ => false,
    })
}

fn refusal(ours: &[String], theirs: &[Proposal]) -> NoProposal {
    let mut weak = Vec::new();
    for t in theirs.iter().flat_map(|p| &p.transforms) {
        let name = match (t.kind, t.id) {
            (transform::ENCR, ENCR_DES) => Some("des"),
            (transform::ENCR, ENCR_3DES) => Some("3des"),
            (transform::INTEG, INTEG_HMAC_MD5_96) => Some("md5"),
            (transform::PRF, PRF_HMAC_MD5) => Some("prfmd5"),
            (transform::DH, 1) => Some("modp768"),
            (transform::DH, 2) => Some("modp1024"),
            (transform::DH, 5) => Some("modp1536"),
            _ => None,
        };
        if let Some(n) = name {
            if !weak.iter().any(|w| w == n) {
                weak.push(n.to_string());
            }
        }
    }
    NoProposal { ours: ours.join(", "), theirs: describe(theirs), weak }
}

/// A peer's proposals in strongSwan's notation, for logs: each proposal
/// its transforms joined by `/` and `-`, e.g.
/// `IKE:aes128/aes256-sha256-prfsha256-ecp256/modp2048`.
pub fn describe(proposals: &[Proposal]) -> String {
    if proposals.is_empty() {
        return "nothing".into();
    }
    let one = |p: &Proposal| {
        let proto = match p.protocol {
            PROTO_IKE => "IKE",
            PROTO_ESP => "ESP",
            2 => "AH",
            _ => "?",
        };
        let mut parts = Vec::new();
        for kind in [transform::ENCR, transform::INTEG, transform::PRF, transform::DH, transform::ESN] {
            let names: Vec<String> = p
                .transforms
                .iter()
                .filter(|t| t.kind == kind)
                .map(|t| transform_name(t.kind, t.id, t.key_length()))
                .collect();
            if !names.is_empty() {
                parts.push(names.join("/"));
            }
        }
        format!("{proto}:{}", parts.join("-"))
    };
    proposals.iter().map(one).collect::<Vec<_>>().join(", ")
}

fn transform_name(kind: u8, id: u16, bits: Option<u16>) -> String {
    let bits = bits.map(|b| b.to_string()).unwrap_or_default();
    match (kind, id) {
        (transform::ENCR, ENCR_DES) => "des".into(),
        (transform::ENCR, ENCR_3DES) => "3des".into(),
        (transform::ENCR, ENCR_AES_CBC) => format!("aes{bits}"),
        (transform::ENCR, ENCR_AES_GCM_16) => format!("aes{bits}gcm16"),
        (transform::ENCR, ENCR_CHACHA20_POLY1305) => "chacha20poly1305".into(),
        (transform::INTEG, 0) => "none".into(),
        (transform::INTEG, INTEG_HMAC_MD5_96) => "md5".into(),
        (transform::INTEG, 2) => "sha1".into(),
        (transform::INTEG, INTEG_HMAC_SHA2_256_128) => "sha256".into(),
        (transform::INTEG, 13) => "sha384".into(),
        (transform::INTEG, 14) => "sha512".into(),
        (transform::PRF, id) => prf_name(id),
        (transform::DH, id) => group_name(id),
        (transform::ESN, 0) => "noesn".into(),
        (transform::ESN, 1) => "esn".into(),
        (kind, id) => format!("type{kind}:{id}"),
    }
}

fn prf_name(id: u16) -> String {
    match id {
        PRF_HMAC_MD5 => "prfmd5".into(),
        2 => "prfsha1".into(),
        5 => "prfsha256".into(),
        6 => "prfsha384".into(),
        7 => "prfsha512".into(),
        id => format!("prf{id}"),
    }
}

fn group_name(id: u16) -> String {
    match id {
        0 => "none".into(),
        1 => "modp768".into(),
        2 => "modp1024".into(),
        5 => "modp1536".into(),
        14 => "modp2048".into(),
        15 => "modp3072".into(),
        16 => "modp4096".into(),
        19 => "ecp256".into(),
        20 => "ecp384".into(),
        21 => "ecp521".into(),
        31 => "curve25519".into(),
        id => format!("dh{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ike(s: &str) -> IkeProposal {
        IkeProposal::parse(s).unwrap()
    }

    #[test]
    fn parses_strongswan_syntax() {
        let p = ike("aes256gcm16-prfsha384-x25519");
        assert_eq!(
            p,
            IkeProposal {
                encryption: Encryption::AesGcm16 { key_bytes: 32 },
                prf: Prf::HmacSha384,
                group: Group::Curve25519
            }
        );
        assert_eq!(p.to_string(), "aes256gcm16-prfsha384-curve25519");
        let p = ike("aes128-sha256-modp2048");
        assert_eq!(p.prf, Prf::HmacSha256);
        assert_eq!(p.to_string(), "aes128-sha256-prfsha256-modp2048");
        // SHA-384 and SHA-512 integrity; the PRF follows the integrity.
        let p = ike("aes256-sha384-ecp384");
        assert_eq!(p.encryption, Encryption::AesCbc { key_bytes: 32, integ: Integ::Sha384 });
        assert_eq!(p.to_string(), "aes256-sha384-prfsha384-ecp384");
        assert_eq!(p.encryption.integ_len(), 48);
        assert_eq!(p.encryption.icv_len(), 24);
        let p = ike("aes128-sha512-prfsha256-modp2048");
        assert_eq!((p.encryption.icv_len(), p.prf), (32, Prf::HmacSha256));
        assert!(p.transforms().contains(&Transform::new(transform::INTEG, 14)));
        assert!(IkeProposal::parse("aes128-modp2048").unwrap_err().to_string().contains("sha384"));
        assert!(IkeProposal::parse("aes128gcm16-sha384-modp2048").is_err());
        let e = EspProposal::parse("aes128-sha256").unwrap();
        assert_eq!(e, EspProposal { suite: Suite::AesCbc128HmacSha256, pfs: None });
        let e = EspProposal::parse("chacha20poly1305-ecp256").unwrap();
        assert_eq!(e.pfs, Some(Group::Ecp256));
        assert_eq!(e.to_string(), "chacha20poly1305-ecp256");
    }

    #[test]
    fn refuses_weak_and_broken_proposals_naming_why() {
        let e = IkeProposal::parse("3des-sha256-modp2048").unwrap_err();
        assert!(e.to_string().contains("3des is weak") && e.to_string().contains("Sweet32"), "{e}");
        let e = IkeProposal::parse("aes128-md5-modp2048").unwrap_err();
        assert!(e.to_string().contains("md5 is weak"), "{e}");
        let e = IkeProposal::parse("aes128-sha256-modp1024").unwrap_err();
        assert!(e.to_string().contains("modp1024 is weak"), "{e}");
        let e = EspProposal::parse("des-sha256").unwrap_err();
        assert!(e.to_string().contains("des is weak"), "{e}");
        assert!(IkeProposal::parse("aes128-modp2048").is_err());
        assert!(IkeProposal::parse("aes128gcm16-sha256-modp2048").is_err());
        assert!(IkeProposal::parse("aes128gcm16-prfsha256").is_err());
        assert!(matches!(EspProposal::parse("aes128-blake"), Err(ProposalError::Unknown(..))));
        assert!(EspProposal::parse("aes256").is_err());
    }

    #[test]
    fn responder_takes_its_first_choice_among_the_peers_offer() {
        let theirs = ike_offer(&[ike("aes128-sha256-modp2048"), ike("aes256gcm16-prfsha256-x25519")], &[]);
        let ours = [ike("aes256gcm16-prfsha256-x25519"), ike("aes128-sha256-modp2048")];
        let (chosen, answer) = choose_ike(&ours, &theirs).unwrap();
        assert_eq!(chosen, ours[0]);
        assert_eq!(answer.number, 2);
        // A peer listing several algorithms per type in one proposal (as
        // strongSwan does) is matched transform by transform.
        let mut many = theirs[0].clone();
        many.transforms.insert(0, Transform::with_key_length(transform::ENCR, ENCR_AES_CBC, 256));
        many.transforms.push(Transform::new(transform::DH, 19));
        let (chosen, _) = choose_ike(&[ike("aes256-sha256-ecp256")], &[many]).unwrap();
        assert_eq!(chosen, ike("aes256-sha256-ecp256"));
    }

    #[test]
    fn esp_choice_carries_the_peers_spi_and_checks_pfs() {
        let theirs = esp_offer(&[EspProposal::parse("aes128-sha256").unwrap()], 0xc0ffee01, false);
        let ours = [EspProposal::parse("aes256gcm16").unwrap(), EspProposal::parse("aes128-sha256").unwrap()];
        let (chosen, spi, answer) = choose_esp(&ours, &theirs, false).unwrap();
        assert_eq!((chosen.suite, spi), (Suite::AesCbc128HmacSha256, 0xc0ffee01));
        assert!(answer.transforms.iter().any(|t| t.kind == transform::ESN && t.id == 0));
        // PFS in a rekey: a group we do not offer is no match.
        let theirs = esp_offer(&[EspProposal::parse("aes256gcm16-ecp384").unwrap()], 7, true);
        let ours = [EspProposal::parse("aes256gcm16-x25519").unwrap()];
        assert!(choose_esp(&ours, &theirs, true).is_err());
        let ours = [EspProposal::parse("aes256gcm16-ecp384").unwrap()];
        assert_eq!(choose_esp(&ours, &theirs, true).unwrap().0.pfs, Some(Group::Ecp384));
        // Only ESN offered (as some devices do): no match, libipsec has none.
        let mut esn = esp_offer(&ours, 7, false);
        esn[0].transforms.retain(|t| t.kind != transform::ESN);
        esn[0].transforms.push(Transform::new(transform::ESN, 1));
        assert!(choose_esp(&ours, &esn, false).is_err());
    }

    #[test]
    fn refusal_names_both_offers_and_the_weakness() {
        let weak = vec![Proposal {
            number: 1,
            protocol: PROTO_IKE,
            spi: vec![],
            transforms: vec![
                Transform::new(transform::ENCR, ENCR_3DES),
                Transform::new(transform::INTEG, 2),
                Transform::new(transform::PRF, PRF_HMAC_MD5),
                Transform::new(transform::DH, 2),
            ],
        }];
        let e = choose_ike(&[ike("aes256gcm16-prfsha256-x25519")], &weak).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("we offer aes256gcm16-prfsha256-curve25519"), "{text}");
        assert!(text.contains("the peer offers IKE:3des-sha1-prfmd5-modp1024"), "{text}");
        assert!(text.contains("refused as weak: 3des, prfmd5, modp1024"), "{text}");
    }
}
