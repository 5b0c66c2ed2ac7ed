//! The ESP transforms, behind one small enum: the AEAD suites AES-GCM-128/256
//! with a 16-byte ICV (RFC 4106) and ChaCha20-Poly1305 (RFC 7634), and
//! AES-CBC-128/256 (RFC 3602) with HMAC-SHA2-256-128 (RFC 4868), the
//! proposal strongSwan makes by default.
//!
//! - AEAD keying material is `key || salt`: the last four bytes are the salt,
//!   the nonce is `salt || IV` with the 8-byte IV on the wire (the sequence
//!   number: unique under the key, all these modes need). What ESP
//!   authenticates besides the payload is the AAD: SPI and sequence number.
//! - AES-CBC with HMAC keying material is `encryption key || integrity key`
//!   (RFC 7296 section 2.17's order). Encrypt-then-MAC: the ICV is the first
//!   16 bytes of HMAC-SHA-256 over the ESP header, IV and ciphertext (and,
//!   with ESN, the high 32 bits of the sequence number, appended: RFC 4303
//!   section 2.2.1), checked in constant time before anything is decrypted.
//!   The 16-byte IV must be unpredictable (RFC 3602 section 3): it is the
//!   sequence number encrypted under the SA's key (NIST SP 800-38A
//!   appendix C), distinct per packet and unknowable without the key.
//!
//! Keys are expanded once per SA, sealing and opening are in place, and the
//! expanded AES and ChaCha20 keys and the salt are zeroized when the SA is
//! dropped. HMAC keeps only the hashes of `key ^ ipad` and `key ^ opad`
//! (not the key); `digest` 0.10 cannot zeroize them, so they are not.

use aes::cipher::consts::U16;
use aes::cipher::{
    BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, BlockSizeUser, InnerIvInit,
};
use aes::{Aes128, Aes256};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroize;

/// Bytes of salt at the end of AEAD keying material.
pub const SALT_LEN: usize = 4;
/// The longest IV on the wire (AES-CBC's block).
pub const MAX_IV_LEN: usize = 16;
/// Bytes of ICV on the wire (every suite here).
pub const ICV_LEN: usize = 16;
/// The coarsest alignment an ESP payload needs (AES-CBC's block).
pub const MAX_BLOCK_LEN: usize = 16;
/// Bytes of HMAC-SHA-256 key.
const HMAC_KEY_LEN: usize = 32;

/// An ESP encryption suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    AesGcm128,
    AesGcm256,
    ChaCha20Poly1305,
    /// AES-CBC-128 with HMAC-SHA2-256-128.
    AesCbc128HmacSha256,
    /// AES-CBC-256 with HMAC-SHA2-256-128.
    AesCbc256HmacSha256,
}

impl Suite {
    pub const ALL: [Suite; 5] = [
        Suite::AesGcm128,
        Suite::AesGcm256,
        Suite::ChaCha20Poly1305,
        Suite::AesCbc128HmacSha256,
        Suite::AesCbc256HmacSha256,
    ];

    /// The name used on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesGcm128 => "aes-gcm-128",
            Suite::AesGcm256 => "aes-gcm-256",
            Suite::ChaCha20Poly1305 => "chacha20-poly1305",
            Suite::AesCbc128HmacSha256 => "aes-cbc-128-hmac-sha256",
            Suite::AesCbc256HmacSha256 => "aes-cbc-256-hmac-sha256",
        }
    }

    /// An AEAD (else encryption and a separate integrity check).
    pub fn is_aead(self) -> bool {
        !matches!(self, Suite::AesCbc128HmacSha256 | Suite::AesCbc256HmacSha256)
    }

    /// Length of the keying material: key and 4-byte salt (AEAD), or
    /// encryption key and integrity key.
    pub fn keymat_len(self) -> usize {
        match self {
            Suite::AesGcm128 => 16 + SALT_LEN,
            Suite::AesGcm256 | Suite::ChaCha20Poly1305 => 32 + SALT_LEN,
            Suite::AesCbc128HmacSha256 => 16 + HMAC_KEY_LEN,
            Suite::AesCbc256HmacSha256 => 32 + HMAC_KEY_LEN,
        }
    }

    /// What the keying material is made of, for error messages.
    fn keymat_parts(self) -> &'static str {
        if self.is_aead() {
            "key and 4-byte salt"
        } else {
            "encryption key and 32-byte integrity key"
        }
    }

    /// Bytes of IV on the wire.
    pub fn iv_len(self) -> usize {
        if self.is_aead() {
            8
        } else {
            16
        }
    }

    /// The ESP payload (packet, padding, trailer) is a multiple of this:
    /// 4 (RFC 4303 section 2.4) or the cipher's block.
    pub fn block_len(self) -> usize {
        if self.is_aead() {
            4
        } else {
            16
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A suite name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown suite {0:?}: expected aes-gcm-128, aes-gcm-256, chacha20-poly1305, aes-cbc-128-hmac-sha256 or aes-cbc-256-hmac-sha256"
)]
pub struct UnknownSuite(pub String);

impl FromStr for Suite {
    type Err = UnknownSuite;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| UnknownSuite(s.to_owned()))
    }
}

/// Keying material of the wrong length for its suite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{suite} needs {expected} bytes of keying material ({}), got {got}", suite.keymat_parts())]
pub struct KeyLength {
    pub suite: Suite,
    pub expected: usize,
    pub got: usize,
}

/// The ICV did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ICV does not verify")]
pub struct IcvMismatch;

/// What ESP authenticates besides the payload: the SPI and the sequence
/// number (its low 32 bits are on the wire; with ESN the high ones are
/// authenticated too).
#[derive(Debug, Clone, Copy)]
pub struct Authenticated {
    pub spi: u32,
    pub seq: u64,
    pub esn: bool,
}

impl Authenticated {
    /// The AEAD's additional authenticated data (RFC 4106 section 5, RFC
    /// 7634 section 2.1): SPI and the 32-bit sequence number, or with ESN
    /// the SPI, the high half and the low half: 8 or 12 bytes.
    fn aad<'a>(&self, out: &'a mut [u8; 12]) -> &'a [u8] {
        out[..4].copy_from_slice(&self.spi.to_be_bytes());
        if self.esn {
            out[4..8].copy_from_slice(&((self.seq >> 32) as u32).to_be_bytes());
            out[8..].copy_from_slice(&(self.seq as u32).to_be_bytes());
            &out[..12]
        } else {
            out[4..8].copy_from_slice(&(self.seq as u32).to_be_bytes());
            &out[..8]
        }
    }

    /// The ICV of encrypt-then-MAC: HMAC over the ESP header, the IV and
    /// the ciphertext, then the high sequence bits with ESN.
    fn mac(&self, key: &Hmac<Sha256>, iv: &[u8], ciphertext: &[u8]) -> Hmac<Sha256> {
        let mut m = key.clone();
        m.update(&self.spi.to_be_bytes());
        m.update(&(self.seq as u32).to_be_bytes());
        m.update(iv);
        m.update(ciphertext);
        if self.esn {
            m.update(&((self.seq >> 32) as u32).to_be_bytes());
        }
        m
    }
}

// Held inline, not boxed: one per SA, and no pointer to chase per packet.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    AesGcm128(Aes128Gcm),
    AesGcm256(Aes256Gcm),
    ChaCha20Poly1305(ChaCha20Poly1305),
    AesCbc128(Aes128, Hmac<Sha256>),
    AesCbc256(Aes256, Hmac<Sha256>),
}

/// The offsets of the lines of an `EspCipher` that sealing or opening
/// with `suite` reads, found once per suite on a cipher of that suite (a
/// type's layout is the same for all its values). An AES-GCM cipher is
/// mostly key schedules that are never read (the decryption keys, and the
/// software fallback's, in a union): its encryption keys are in its first
/// lines and its GHASH key in its last, whichever way the compiler orders
/// its two fields. The other suites: all their lines.
fn hot_lines(suite: Suite) -> &'static [usize] {
    static LINES: std::sync::OnceLock<Vec<Vec<usize>>> = std::sync::OnceLock::new();
    let all = LINES.get_or_init(|| {
        Suite::ALL
            .iter()
            .map(|&suite| {
                let c = EspCipher::new(suite, &vec![0x5a; suite.keymat_len()]).expect("the right length");
                let start = &c as *const EspCipher as usize;
                let size = std::mem::size_of::<EspCipher>();
                let (o, keys, len) = match &c.cipher {
                    Cipher::AesGcm128(g) => (g as *const Aes128Gcm as usize - start, 11 * 16, std::mem::size_of_val(g)),
                    Cipher::AesGcm256(g) => (g as *const Aes256Gcm as usize - start, 15 * 16, std::mem::size_of_val(g)),
                    _ => (0, size, size),
                };
                // The round keys (after the GHASH state, if that comes
                // first), the GHASH state (the last bytes, if it comes
                // last), the salt; the whole of other suites.
                let mut at: Vec<usize> = (o / 64 * 64..(o + 32 + keys).min(size)).step_by(64).collect();
                at.extend([o + len - 16, std::mem::offset_of!(EspCipher, salt)]);
                let mut lines: Vec<usize> = at.into_iter().map(|a| a / 64 * 64).collect();
                lines.sort_unstable();
                lines.dedup();
                lines
            })
            .collect()
    });
    &all[Suite::ALL.iter().position(|&s| s == suite).expect("every suite")]
}

/// An SA's expanded keys: what it seals or opens with.
pub struct EspCipher {
    cipher: Cipher,
    salt: [u8; SALT_LEN],
}

impl fmt::Debug for EspCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("EspCipher").field("suite", &self.suite()).finish_non_exhaustive()
    }
}

impl EspCipher {
    /// Starts loading what sealing or opening with `suite` reads of the
    /// `EspCipher` at `c` (an address only: nothing is read).
    #[inline]
    pub(crate) fn prefetch(c: *const u8, suite: Suite) {
        for &line in hot_lines(suite) {
            crate::prefetch::bytes(c.wrapping_add(line), 1);
        }
    }

    /// Expands `keymat` for `suite`.
    pub fn new(suite: Suite, keymat: &[u8]) -> Result<Self, KeyLength> {
        if keymat.len() != suite.keymat_len() {
            return Err(KeyLength { suite, expected: suite.keymat_len(), got: keymat.len() });
        }
        let mut salt = [0u8; SALT_LEN];
        let (key, rest) = keymat.split_at(keymat.len() - if suite.is_aead() { SALT_LEN } else { HMAC_KEY_LEN });
        let hmac = || <Hmac<Sha256> as Mac>::new_from_slice(rest).expect("HMAC takes any key length");
        let cipher = match suite {
            Suite::AesGcm128 => Cipher::AesGcm128(Aes128Gcm::new_from_slice(key).expect("length checked")),
            Suite::AesGcm256 => Cipher::AesGcm256(Aes256Gcm::new_from_slice(key).expect("length checked")),
            Suite::ChaCha20Poly1305 => {
                Cipher::ChaCha20Poly1305(ChaCha20Poly1305::new_from_slice(key).expect("length checked"))
            }
            Suite::AesCbc128HmacSha256 => Cipher::AesCbc128(Aes128::new_from_slice(key).expect("16 bytes"), hmac()),
            Suite::AesCbc256HmacSha256 => Cipher::AesCbc256(Aes256::new_from_slice(key).expect("32 bytes"), hmac()),
        };
        if suite.is_aead() {
            salt.copy_from_slice(rest);
        }
        Ok(Self { cipher, salt })
    }

    pub fn suite(&self) -> Suite {
        match self.cipher {
            Cipher::AesGcm128(_) => Suite::AesGcm128,
            Cipher::AesGcm256(_) => Suite::AesGcm256,
            Cipher::ChaCha20Poly1305(_) => Suite::ChaCha20Poly1305,
            Cipher::AesCbc128(..) => Suite::AesCbc128HmacSha256,
            Cipher::AesCbc256(..) => Suite::AesCbc256HmacSha256,
        }
    }

    #[inline]
    fn nonce(&self, iv: &[u8]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }

    /// Writes the IV of the packet with sequence number `seq` into `iv`
    /// ([`Suite::iv_len`] bytes): the 64-bit number itself for the AEADs,
    /// the number encrypted under the SA's key for AES-CBC.
    #[inline]
    pub fn iv(&self, seq: u64, iv: &mut [u8]) {
        match &self.cipher {
            Cipher::AesCbc128(aes, _) => cbc_iv(aes, seq, iv),
            Cipher::AesCbc256(aes, _) => cbc_iv(aes, seq, iv),
            _ => iv.copy_from_slice(&seq.to_be_bytes()),
        }
    }

    /// Encrypts `buf` in place (for AES-CBC a whole number of blocks) and
    /// returns the ICV.
    #[inline]
    pub fn seal(&self, auth: &Authenticated, iv: &[u8], buf: &mut [u8]) -> [u8; ICV_LEN] {
        let mut aad_buf = [0u8; 12];
        // AEAD encryption fails only for messages beyond 2^36 bytes; an IP
        // packet is at most 64 KiB, so it cannot happen.
        let aead = "an IP packet is far below the AEAD length limit";
        let tag = match &self.cipher {
            Cipher::AesGcm128(c) => {
                c.encrypt_in_place_detached((&self.nonce(iv)).into(), auth.aad(&mut aad_buf), buf).expect(aead)
            }
            Cipher::AesGcm256(c) => {
                c.encrypt_in_place_detached((&self.nonce(iv)).into(), auth.aad(&mut aad_buf), buf).expect(aead)
            }
            Cipher::ChaCha20Poly1305(c) => {
                c.encrypt_in_place_detached((&self.nonce(iv)).into(), auth.aad(&mut aad_buf), buf).expect(aead)
            }
            Cipher::AesCbc128(aes, key) => return cbc_seal(aes, key, auth, iv, buf),
            Cipher::AesCbc256(aes, key) => return cbc_seal(aes, key, auth, iv, buf),
        };
        tag.into()
    }

    /// Verifies `icv` and decrypts `buf` in place. On a mismatch `buf` is
    /// left as it was (the ICV is checked before decryption). For AES-CBC
    /// `buf` must be a whole number of blocks.
    #[inline]
    pub fn open(
        &self,
        auth: &Authenticated,
        iv: &[u8],
        buf: &mut [u8],
        icv: &[u8; ICV_LEN],
    ) -> Result<(), IcvMismatch> {
        let mut aad_buf = [0u8; 12];
        match &self.cipher {
            Cipher::AesGcm128(c) => {
                c.decrypt_in_place_detached((&self.nonce(iv)).into(), auth.aad(&mut aad_buf), buf, icv.into())
            }
            Cipher::AesGcm256(c) => {
                c.decrypt_in_place_detached((&self.nonce(iv)).into(), auth.aad(&mut aad_buf), buf, icv.into())
            }
            Cipher::ChaCha20Poly1305(c) => {
                c.decrypt_in_place_detached((&self.nonce(iv)).into(), auth.aad(&mut aad_buf), buf, icv.into())
            }
            Cipher::AesCbc128(aes, key) => return cbc_open(aes, key, auth, iv, buf, icv),
            Cipher::AesCbc256(aes, key) => return cbc_open(aes, key, auth, iv, buf, icv),
        }
        .map_err(|_| IcvMismatch)
    }
}

/// AES of either key size, as CBC uses it.
trait Aes: BlockCipher + BlockEncrypt + BlockDecrypt + BlockSizeUser<BlockSize = U16> + Clone {}
impl Aes for Aes128 {}
impl Aes for Aes256 {}

/// The AES-CBC IV of packet `seq`: the number, as a block, encrypted.
fn cbc_iv<C: Aes>(aes: &C, seq: u64, iv: &mut [u8]) {
    let mut block = [0u8; 16];
    block[8..].copy_from_slice(&seq.to_be_bytes());
    let b = aes::Block::from_mut_slice(&mut block);
    aes.encrypt_block(b);
    iv.copy_from_slice(&block);
}

fn cbc_seal<C: Aes>(aes: &C, key: &Hmac<Sha256>, auth: &Authenticated, iv: &[u8], buf: &mut [u8]) -> [u8; ICV_LEN] {
    assert!(buf.len().is_multiple_of(16), "ESP pads a CBC payload to whole blocks");
    let mut enc = cbc::Encryptor::<C>::inner_iv_slice_init(aes.clone(), iv).expect("a 16-byte IV");
    for block in buf.chunks_exact_mut(16) {
        enc.encrypt_block_mut(aes::Block::from_mut_slice(block));
    }
    let tag = auth.mac(key, iv, buf).finalize().into_bytes();
    tag[..ICV_LEN].try_into().expect("SHA-256 is 32 bytes")
}

fn cbc_open<C: Aes>(
    aes: &C,
    key: &Hmac<Sha256>,
    auth: &Authenticated,
    iv: &[u8],
    buf: &mut [u8],
    icv: &[u8; ICV_LEN],
) -> Result<(), IcvMismatch> {
    auth.mac(key, iv, buf).verify_truncated_left(icv).map_err(|_| IcvMismatch)?;
    if !buf.len().is_multiple_of(16) {
        // Authentic, but not whole blocks: a broken peer.
        return Err(IcvMismatch);
    }
    let mut dec = cbc::Decryptor::<C>::inner_iv_slice_init(aes.clone(), iv).expect("a 16-byte IV");
    for block in buf.chunks_exact_mut(16) {
        dec.decrypt_block_mut(aes::Block::from_mut_slice(block));
    }
    Ok(())
}

impl Drop for EspCipher {
    fn drop(&mut self) {
        // The ciphers zeroize their own expanded keys (the crates' `zeroize`
        // features); the salt is ours.
        self.salt.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_lines_are_inside_the_cipher_and_fewer_for_aes_gcm() {
        let size = std::mem::size_of::<EspCipher>();
        let whole = size.div_ceil(64);
        for suite in Suite::ALL {
            let lines = hot_lines(suite);
            assert!(lines.windows(2).all(|w| w[0] < w[1]) && lines.iter().all(|l| l % 64 == 0 && *l < size));
            assert!(lines.contains(&(std::mem::offset_of!(EspCipher, salt) / 64 * 64)), "{suite:?}: the salt");
            match suite {
                // Round keys (4-5 lines), GHASH, salt: about half of it.
                Suite::AesGcm128 | Suite::AesGcm256 => assert!(lines.len() <= 7 && lines.len() < whole, "{lines:?}"),
                _ => assert_eq!(lines.len(), whole, "{suite:?}"),
            }
        }
    }

    fn auth(seq: u64, esn: bool) -> Authenticated {
        Authenticated { spi: 0x1001, seq, esn }
    }

    #[test]
    fn every_suite_round_trips_and_detects_tampering() {
        for suite in Suite::ALL {
            for esn in [false, true] {
                let keymat: Vec<u8> = (0..suite.keymat_len() as u8).collect();
                let c = EspCipher::new(suite, &keymat).unwrap();
                let a = auth(7 | 5 << 32, esn);
                let mut iv = vec![0u8; suite.iv_len()];
                c.iv(a.seq, &mut iv);
                let plain = *b"inner packet bytes, two blocks!!";
                let mut buf = plain;
                let icv = c.seal(&a, &iv, &mut buf);
                assert_ne!(buf, plain);
                let mut bad = buf;
                bad[0] ^= 1;
                assert_eq!(c.open(&a, &iv, &mut bad, &icv), Err(IcvMismatch), "{suite}");
                assert_eq!(bad[1..], buf[1..], "{suite}: left as it was");
                let other = Authenticated { spi: 0x1002, ..a };
                assert_eq!(c.open(&other, &iv, &mut buf.clone(), &icv), Err(IcvMismatch), "{suite}: the SPI");
                let high = Authenticated { seq: a.seq + (1 << 32), ..a };
                let want = if esn { Err(IcvMismatch) } else { Ok(()) };
                assert_eq!(c.open(&high, &iv, &mut buf.clone(), &icv), want, "{suite}: the high bits with ESN only");
                c.open(&a, &iv, &mut buf, &icv).unwrap();
                assert_eq!(buf, plain, "{suite}");
            }
        }
    }

    #[test]
    fn cbc_ivs_are_distinct_and_not_the_sequence_number() {
        let c = EspCipher::new(Suite::AesCbc128HmacSha256, &[9; 48]).unwrap();
        let ivs: Vec<[u8; 16]> = (1..1000u64)
            .map(|s| {
                let mut iv = [0u8; 16];
                c.iv(s, &mut iv);
                iv
            })
            .collect();
        let mut sorted = ivs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ivs.len());
        assert!(ivs.iter().all(|iv| iv[..8] != [0; 8]), "not a counter in the clear");
    }

    #[test]
    fn key_length_and_suite_names_are_checked() {
        let e = EspCipher::new(Suite::AesGcm256, &[0u8; 20]).unwrap_err();
        assert_eq!(e.to_string(), "aes-gcm-256 needs 36 bytes of keying material (key and 4-byte salt), got 20");
        let e = EspCipher::new(Suite::AesCbc128HmacSha256, &[0u8; 20]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "aes-cbc-128-hmac-sha256 needs 48 bytes of keying material (encryption key and 32-byte integrity key), got 20"
        );
        assert_eq!("chacha20-poly1305".parse::<Suite>(), Ok(Suite::ChaCha20Poly1305));
        assert_eq!("aes-cbc-256-hmac-sha256".parse::<Suite>(), Ok(Suite::AesCbc256HmacSha256));
        assert!("aes-cbc".parse::<Suite>().is_err());
        assert!(!format!("{:?}", EspCipher::new(Suite::AesGcm128, &[0x41; 20]).unwrap()).contains("41"));
    }
}
