//! IKEv2's cryptography, without I/O: the PRFs (HMAC-SHA2-256/384/512, RFC
//! 4868), `prf+` (RFC 7296 section 2.13), the keys of an IKE SA (section
//! 2.14: SKEYSEED and SK_d, SK_ai/ar, SK_ei/er, SK_pi/pr) and of a child SA
//! (section 2.17), and the Diffie-Hellman groups vpngw offers: 14
//! (MODP-2048, RFC 3526), 19 and 20 (ECP-256/384, RFC 5903), 31
//! (Curve25519, RFC 8031).
//!
//! Private values come from the OS random source; every secret is
//! zeroized when dropped; a peer's public value is checked before use (its
//! length, a point on the curve, 1 < y < p - 1 for MODP, a non-zero
//! X25519 result), and a bad one is an error, never a panic.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U2048};
use elliptic_curve::sec1::{FromEncodedPoint, ModulusSize, ToEncodedPoint};
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

/// A secret byte string, zeroized on drop.
pub type Secret = Zeroizing<Vec<u8>>;

/// The PRF transforms (IKEv2 transform type 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Prf {
    pub const ALL: [Prf; 3] = [Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512];

    /// The IANA transform ID (PRF_HMAC_SHA2_256 is 5, 384 is 6, 512 is 7).
    pub fn id(self) -> u16 {
        match self {
            Prf::HmacSha256 => 5,
            Prf::HmacSha384 => 6,
            Prf::HmacSha512 => 7,
        }
    }

    pub fn from_id(id: u16) -> Option<Prf> {
        Prf::ALL.into_iter().find(|p| p.id() == id)
    }

    /// Bytes of output, and of SK_d, SK_pi and SK_pr.
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// prf(key, data...), the parts of `data` concatenated.
    pub fn compute(self, key: &[u8], data: &[&[u8]]) -> Secret {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[&[u8]]) -> Secret {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            for d in data {
                m.update(d);
            }
            Zeroizing::new(m.finalize().into_bytes().to_vec())
        }
        match self {
            Prf::HmacSha256 => run::<Hmac<Sha256>>(key, data),
            Prf::HmacSha384 => run::<Hmac<Sha384>>(key, data),
            Prf::HmacSha512 => run::<Hmac<Sha512>>(key, data),
        }
    }

    /// prf+(key, seed) cut to `len` bytes (RFC 7296 section 2.13): T1 =
    /// prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
    ///
    /// # Panics
    /// If `len` exceeds 255 outputs, which no negotiated key set needs.
    pub fn plus(self, key: &[u8], seed: &[u8], len: usize) -> Secret {
        assert!(len <= 255 * self.output_len(), "prf+ yields at most 255 blocks");
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut t: Secret = Zeroizing::new(Vec::new());
        let mut n = 1u8;
        while out.len() < len {
            t = self.compute(key, &[&t, seed, &[n]]);
            out.extend_from_slice(&t);
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        out
    }
}

/// The keys of an IKE SA (RFC 7296 section 2.14).
pub struct IkeKeys {
    pub skeyseed: Secret,
    /// Derives the child SAs' keys.
    pub sk_d: Secret,
    /// Integrity, initiator to responder and back (empty for AEADs).
    pub sk_ai: Secret,
    pub sk_ar: Secret,
    /// Encryption (AEADs: key and salt).
    pub sk_ei: Secret,
    pub sk_er: Secret,
    /// What the AUTH payloads are computed with.
    pub sk_pi: Secret,
    pub sk_pr: Secret,
}

impl IkeKeys {
    /// The keys of a new IKE SA: SKEYSEED = prf(Ni | Nr, g^ir); the rest
    /// from prf+(SKEYSEED, Ni | Nr | SPIi | SPIr), in the order SK_d,
    /// SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr.
    #[allow(clippy::too_many_arguments)]
    pub fn derive(
        prf: Prf,
        shared: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        integ_len: usize,
        encr_len: usize,
    ) -> IkeKeys {
        let key: Secret = Zeroizing::new([ni, nr].concat());
        let skeyseed = prf.compute(&key, &[shared]);
        Self::from_skeyseed(prf, skeyseed, ni, nr, spi_i, spi_r, integ_len, encr_len)
    }

    /// The keys of an IKE SA made by rekeying (RFC 7296 section 2.18):
    /// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) with the old IKE
    /// SA's PRF, the rest with the new one's, from the new SPIs.
    #[allow(clippy::too_many_arguments)]
    pub fn rekey(
        old_prf: Prf,
        prf: Prf,
        old_sk_d: &[u8],
        shared: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        integ_len: usize,
        encr_len: usize,
    ) -> IkeKeys {
        let skeyseed = old_prf.compute(old_sk_d, &[shared, ni, nr]);
        Self::from_skeyseed(prf, skeyseed, ni, nr, spi_i, spi_r, integ_len, encr_len)
    }

    #[allow(clippy::too_many_arguments)]
    fn from_skeyseed(
        prf: Prf,
        skeyseed: Secret,
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        integ_len: usize,
        encr_len: usize,
    ) -> IkeKeys {
        let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
        let p = prf.output_len();
        let all = prf.plus(&skeyseed, &seed, 3 * p + 2 * integ_len + 2 * encr_len);
        let mut at = 0;
        let mut take = |n: usize| {
            let k = Zeroizing::new(all[at..at + n].to_vec());
            at += n;
            k
        };
        IkeKeys {
            sk_d: take(p),
            sk_ai: take(integ_len),
            sk_ar: take(integ_len),
            sk_ei: take(encr_len),
            sk_er: take(encr_len),
            sk_pi: take(p),
            sk_pr: take(p),
            skeyseed,
        }
    }
}

/// A child SA's keying material (RFC 7296 section 2.17): prf+(SK_d,
/// [g^ir (new) |] Ni | Nr), `len` bytes. ESP takes, in order, the
/// initiator-to-responder SA's encryption then integrity key, then the
/// other direction's.
pub fn child_keymat(prf: Prf, sk_d: &[u8], shared: Option<&[u8]>, ni: &[u8], nr: &[u8], len: usize) -> Secret {
    let seed: Secret = Zeroizing::new([shared.unwrap_or(&[]), ni, nr].concat());
    prf.plus(sk_d, &seed, len)
}

/// The Diffie-Hellman groups (IKEv2 transform type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Modp2048,
    Ecp256,
    Ecp384,
    Curve25519,
}

/// A public value or private key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    #[error("group {group}: a public value of {got} bytes, not {want}")]
    Length { group: u16, got: usize, want: usize },
    #[error("group {0}: the peer's public value is not valid (not on the curve, or out of range)")]
    Invalid(u16),
    #[error("the OS random source failed: {0}")]
    Random(String),
}

/// RFC 3526 section 3: the 2048-bit MODP group's prime (generator 2).
const MODP2048_P: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD\
EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F2411\
7C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D\
670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497C\
EA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";

/// The MODP group's private exponents: 256 bits (RFC 3526 section 8 asks
/// for at least twice the 112-bit strength).
const MODP_EXPONENT_BITS: usize = 256;

impl Group {
    pub const ALL: [Group; 4] = [Group::Modp2048, Group::Ecp256, Group::Ecp384, Group::Curve25519];

    /// The IANA transform ID.
    pub fn id(self) -> u16 {
        match self {
            Group::Modp2048 => 14,
            Group::Ecp256 => 19,
            Group::Ecp384 => 20,
            Group::Curve25519 => 31,
        }
    }

    pub fn from_id(id: u16) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.id() == id)
    }

    /// Bytes of a public value in a KE payload.
    pub fn public_len(self) -> usize {
        match self {
            Group::Modp2048 => 256,
            Group::Ecp256 => 64,
            Group::Ecp384 => 96,
            Group::Curve25519 => 32,
        }
    }

    /// Bytes of a private value `KeyPair::from_private` takes.
    pub fn private_len(self) -> usize {
        match self {
            Group::Modp2048 => MODP_EXPONENT_BITS / 8,
            Group::Ecp256 | Group::Curve25519 => 32,
            Group::Ecp384 => 48,
        }
    }
}

fn modp_params() -> DynResidueParams<{ U2048::LIMBS }> {
    DynResidueParams::new(&U2048::from_be_hex(MODP2048_P))
}

/// One side's Diffie-Hellman key pair. The private value is zeroized on
/// drop (kept as bytes, turned into the group's type only while used).
pub struct KeyPair {
    group: Group,
    private: Secret,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("group", &self.group).finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair from the OS random source.
    pub fn generate(group: Group) -> Result<KeyPair, DhError> {
        loop {
            let mut bytes = Zeroizing::new(vec![0u8; group.private_len()]);
            getrandom::getrandom(&mut bytes).map_err(|e| DhError::Random(e.to_string()))?;
            match Self::from_private(group, &bytes) {
                Ok(k) => return Ok(k),
                // A scalar of zero or above the order: draw again.
                Err(DhError::Invalid(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The key pair of a given private value ([`Group::private_len`]
    /// bytes, big-endian; Curve25519's as RFC 7748 writes it).
    pub fn from_private(group: Group, private: &[u8]) -> Result<KeyPair, DhError> {
        let want = group.private_len();
        if private.len() != want {
            return Err(DhError::Length { group: group.id(), got: private.len(), want });
        }
        let public = match group {
            Group::Modp2048 => {
                let x = Zeroizing::new(exponent(private));
                let g = DynResidue::new(&U2048::from_u8(2), modp_params());
                g.pow_bounded_exp(&x, MODP_EXPONENT_BITS).retrieve().to_be_bytes().to_vec()
            }
            Group::Ecp256 => ecp_public::<p256::NistP256>(private).ok_or(DhError::Invalid(group.id()))?,
            Group::Ecp384 => ecp_public::<p384::NistP384>(private).ok_or(DhError::Invalid(group.id()))?,
            Group::Curve25519 => {
                let sk = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(private).expect("32 bytes"));
                x25519_dalek::PublicKey::from(&sk).as_bytes().to_vec()
            }
        };
        Ok(KeyPair { group, private: Zeroizing::new(private.to_vec()), public })
    }

    pub fn group(&self) -> Group {
        self.group
    }

    /// The public value, as a KE payload carries it (MODP: big-endian,
    /// 256 bytes; ECP: x | y, RFC 5903 section 7; Curve25519: RFC 7748).
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir with the peer's public value (ECP: the x
    /// coordinate, RFC 5903 section 7), after checking that value.
    pub fn shared(&self, peer: &[u8]) -> Result<Secret, DhError> {
        let (group, id) = (self.group, self.group.id());
        if peer.len() != group.public_len() {
            return Err(DhError::Length { group: id, got: peer.len(), want: group.public_len() });
        }
        let secret = match group {
            Group::Modp2048 => {
                let p = U2048::from_be_hex(MODP2048_P);
                let y = U2048::from_be_slice(peer);
                // RFC 6989 section 2.1: 1 < y < p - 1.
                if y <= U2048::ONE || y >= p.wrapping_sub(&U2048::ONE) {
                    return Err(DhError::Invalid(id));
                }
                let x = Zeroizing::new(exponent(&self.private));
                let s = DynResidue::new(&y, modp_params()).pow_bounded_exp(&x, MODP_EXPONENT_BITS).retrieve();
                Zeroizing::new(s.to_be_bytes().to_vec())
            }
            Group::Ecp256 => ecp_shared::<p256::NistP256>(&self.private, peer).ok_or(DhError::Invalid(id))?,
            Group::Ecp384 => ecp_shared::<p384::NistP384>(&self.private, peer).ok_or(DhError::Invalid(id))?,
            Group::Curve25519 => {
                let sk = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(&self.private[..]).expect("32 bytes"));
                let pk = x25519_dalek::PublicKey::from(<[u8; 32]>::try_from(peer).expect("length checked"));
                let s = sk.diffie_hellman(&pk);
                // RFC 8031 section 2.2: an all-zero result is refused.
                if !s.was_contributory() {
                    return Err(DhError::Invalid(id));
                }
                Zeroizing::new(s.as_bytes().to_vec())
            }
        };
        Ok(secret)
    }
}

/// The public value x | y of a private scalar on a NIST curve (p256,
/// p384), or `None` if the scalar is zero or not below the group's order.
fn ecp_public<C: elliptic_curve::CurveArithmetic>(private: &[u8]) -> Option<Vec<u8>>
where
    elliptic_curve::AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
    elliptic_curve::FieldBytesSize<C>: ModulusSize,
{
    let sk = elliptic_curve::SecretKey::<C>::from_slice(private).ok()?;
    Some(sk.public_key().to_encoded_point(false).as_bytes()[1..].to_vec())
}

/// The x coordinate of the shared point with the peer's x | y, or `None`
/// if that is not a point on the curve.
fn ecp_shared<C: elliptic_curve::CurveArithmetic>(private: &[u8], peer: &[u8]) -> Option<Secret>
where
    elliptic_curve::AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
    elliptic_curve::FieldBytesSize<C>: ModulusSize,
{
    let point = elliptic_curve::sec1::EncodedPoint::<C>::from_untagged_bytes(peer.into());
    let pk = Option::<elliptic_curve::PublicKey<C>>::from(elliptic_curve::PublicKey::from_encoded_point(&point))?;
    let sk = elliptic_curve::SecretKey::<C>::from_slice(private).ok()?;
    let s = elliptic_curve::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
    Some(Zeroizing::new(s.raw_secret_bytes().to_vec()))
}

/// A MODP private exponent as a 2048-bit number.
fn exponent(bytes: &[u8]) -> U2048 {
    let mut wide = [0u8; 256];
    wide[256 - bytes.len()..].copy_from_slice(bytes);
    let x = U2048::from_be_slice(&wide);
    zeroize::Zeroize::zeroize(&mut wide);
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).unwrap()
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let out = Prf::HmacSha256.compute(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(crate::hex::encode(&out), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn prf_plus_is_the_chain_of_rfc_7296() {
        let (k, s) = (b"key".as_slice(), b"seed".as_slice());
        let p = Prf::HmacSha256;
        let t1 = p.compute(k, &[s, &[1]]);
        let t2 = p.compute(k, &[&t1, s, &[2]]);
        let out = p.plus(k, s, 40);
        assert_eq!(&out[..32], &t1[..]);
        assert_eq!(&out[32..], &t2[..8]);
    }

    #[test]
    fn both_sides_of_every_group_agree_and_bad_values_are_refused() {
        for g in Group::ALL {
            let (a, b) = (KeyPair::generate(g).unwrap(), KeyPair::generate(g).unwrap());
            assert_eq!(a.public().len(), g.public_len(), "{g:?}");
            let (s1, s2) = (a.shared(b.public()).unwrap(), b.shared(a.public()).unwrap());
            assert_eq!(s1, s2, "{g:?}");
            assert_ne!(a.public(), b.public());
            let e = a.shared(&b.public()[1..]).unwrap_err();
            assert!(matches!(e, DhError::Length { .. }), "{g:?}: {e}");
            if g != Group::Curve25519 {
                let mut bad = b.public().to_vec();
                bad.iter_mut().for_each(|x| *x = 0xff);
                assert_eq!(a.shared(&bad).unwrap_err(), DhError::Invalid(g.id()), "{g:?}: p - 1 or off the curve");
            }
        }
        let a = KeyPair::generate(Group::Modp2048).unwrap();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert_eq!(a.shared(&one).unwrap_err(), DhError::Invalid(14), "y = 1");
        let x = KeyPair::generate(Group::Curve25519).unwrap();
        assert_eq!(x.shared(&[0u8; 32]).unwrap_err(), DhError::Invalid(31), "a low-order point");
    }

    #[test]
    fn x25519_matches_rfc_7748_section_6_1() {
        let alice = KeyPair::from_private(
            Group::Curve25519,
            &unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        )
        .unwrap();
        assert_eq!(
            crate::hex::encode(alice.public()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let bob_public = unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        assert_eq!(
            crate::hex::encode(&alice.shared(&bob_public).unwrap()),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
    }
}
