//! The AEAD suites ESP uses, behind one small enum: AES-GCM-128/256 with a
//! 16-byte ICV (RFC 4106) and ChaCha20-Poly1305 (RFC 7634).
//!
//! Keying material is `key || salt`: the last four bytes are the salt, the
//! nonce is `salt || IV` with the 8-byte IV on the wire. Keys are expanded
//! once per SA, sealing and opening are in place, and the expanded keys and
//! the salt are zeroized when the SA is dropped.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroize;

/// Bytes of salt at the end of the keying material.
pub const SALT_LEN: usize = 4;
/// Bytes of explicit IV on the wire.
pub const IV_LEN: usize = 8;
/// Bytes of ICV on the wire.
pub const ICV_LEN: usize = 16;

/// An ESP encryption suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    AesGcm128,
    AesGcm256,
    ChaCha20Poly1305,
}

impl Suite {
    pub const ALL: [Suite; 3] = [Suite::AesGcm128, Suite::AesGcm256, Suite::ChaCha20Poly1305];

    /// The name used on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesGcm128 => "aes-gcm-128",
            Suite::AesGcm256 => "aes-gcm-256",
            Suite::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// Length of the keying material: key plus 4-byte salt.
    pub fn keymat_len(self) -> usize {
        match self {
            Suite::AesGcm128 => 16 + SALT_LEN,
            Suite::AesGcm256 | Suite::ChaCha20Poly1305 => 32 + SALT_LEN,
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
#[error("unknown suite {0:?}: expected aes-gcm-128, aes-gcm-256 or chacha20-poly1305")]
pub struct UnknownSuite(pub String);

impl FromStr for Suite {
    type Err = UnknownSuite;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| UnknownSuite(s.to_owned()))
    }
}

/// Keying material of the wrong length for its suite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{suite} needs {expected} bytes of keying material (key and 4-byte salt), got {got}")]
pub struct KeyLength {
    pub suite: Suite,
    pub expected: usize,
    pub got: usize,
}

/// The ICV did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ICV does not verify")]
pub struct IcvMismatch;

// Held inline, not boxed: one per SA, and no pointer to chase per packet.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    AesGcm128(Aes128Gcm),
    AesGcm256(Aes256Gcm),
    ChaCha20Poly1305(ChaCha20Poly1305),
}

/// An expanded key and its salt: what one SA seals or opens with.
pub struct Aead {
    cipher: Cipher,
    salt: [u8; SALT_LEN],
}

impl fmt::Debug for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Aead").field("suite", &self.suite()).finish_non_exhaustive()
    }
}

impl Aead {
    /// Expands `keymat` (key || 4-byte salt) for `suite`.
    pub fn new(suite: Suite, keymat: &[u8]) -> Result<Self, KeyLength> {
        if keymat.len() != suite.keymat_len() {
            return Err(KeyLength { suite, expected: suite.keymat_len(), got: keymat.len() });
        }
        let (key, salt) = keymat.split_at(keymat.len() - SALT_LEN);
        let cipher = match suite {
            Suite::AesGcm128 => Cipher::AesGcm128(Aes128Gcm::new_from_slice(key).expect("length checked")),
            Suite::AesGcm256 => Cipher::AesGcm256(Aes256Gcm::new_from_slice(key).expect("length checked")),
            Suite::ChaCha20Poly1305 => {
                Cipher::ChaCha20Poly1305(ChaCha20Poly1305::new_from_slice(key).expect("length checked"))
            }
        };
        Ok(Self { cipher, salt: salt.try_into().expect("4 bytes") })
    }

    pub fn suite(&self) -> Suite {
        match self.cipher {
            Cipher::AesGcm128(_) => Suite::AesGcm128,
            Cipher::AesGcm256(_) => Suite::AesGcm256,
            Cipher::ChaCha20Poly1305(_) => Suite::ChaCha20Poly1305,
        }
    }

    #[inline]
    fn nonce(&self, iv: &[u8; IV_LEN]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }

    /// Encrypts `buf` in place and returns the ICV.
    #[inline]
    pub fn seal(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; ICV_LEN] {
        let nonce = self.nonce(iv);
        let nonce = (&nonce).into();
        // Encryption fails only for messages beyond 2^36 bytes; an IP packet
        // is at most 64 KiB, so this cannot happen.
        let tag = match &self.cipher {
            Cipher::AesGcm128(c) => c.encrypt_in_place_detached(nonce, aad, buf),
            Cipher::AesGcm256(c) => c.encrypt_in_place_detached(nonce, aad, buf),
            Cipher::ChaCha20Poly1305(c) => c.encrypt_in_place_detached(nonce, aad, buf),
        }
        .expect("an IP packet is far below the AEAD length limit");
        tag.into()
    }

    /// Verifies `icv` and decrypts `buf` in place. On a mismatch `buf` is
    /// left as it was (the crates verify before they decrypt).
    #[inline]
    pub fn open(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut [u8], icv: &[u8; ICV_LEN]) -> Result<(), IcvMismatch> {
        let nonce = self.nonce(iv);
        let nonce = (&nonce).into();
        let tag = icv.into();
        match &self.cipher {
            Cipher::AesGcm128(c) => c.decrypt_in_place_detached(nonce, aad, buf, tag),
            Cipher::AesGcm256(c) => c.decrypt_in_place_detached(nonce, aad, buf, tag),
            Cipher::ChaCha20Poly1305(c) => c.decrypt_in_place_detached(nonce, aad, buf, tag),
        }
        .map_err(|_| IcvMismatch)
    }
}

impl Drop for Aead {
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
    fn every_suite_round_trips_and_detects_tampering() {
        for suite in Suite::ALL {
            let keymat: Vec<u8> = (0..suite.keymat_len() as u8).collect();
            let aead = Aead::new(suite, &keymat).unwrap();
            let iv = 7u64.to_be_bytes();
            let mut buf = *b"inner packet bytes";
            let icv = aead.seal(&iv, b"aad", &mut buf);
            assert_ne!(&buf, b"inner packet bytes");
            let mut bad = buf;
            bad[0] ^= 1;
            assert_eq!(aead.open(&iv, b"aad", &mut bad, &icv), Err(IcvMismatch));
            assert_eq!(aead.open(&iv, b"aaD", &mut buf.clone(), &icv), Err(IcvMismatch));
            aead.open(&iv, b"aad", &mut buf, &icv).unwrap();
            assert_eq!(&buf, b"inner packet bytes");
        }
    }

    #[test]
    fn key_length_and_suite_names_are_checked() {
        let e = Aead::new(Suite::AesGcm256, &[0u8; 20]).unwrap_err();
        assert_eq!(e.to_string(), "aes-gcm-256 needs 36 bytes of keying material (key and 4-byte salt), got 20");
        assert_eq!("chacha20-poly1305".parse::<Suite>(), Ok(Suite::ChaCha20Poly1305));
        assert!("aes-cbc".parse::<Suite>().is_err());
        assert!(!format!("{:?}", Aead::new(Suite::AesGcm128, &[0x41; 20]).unwrap()).contains("41"));
    }
}
