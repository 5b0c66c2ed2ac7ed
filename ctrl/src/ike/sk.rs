//! The Encrypted payload (RFC 7296 section 3.14): how an IKE SA protects
//! the payloads of its messages, with AES-GCM-16 (RFC 5282) or AES-CBC
//! with HMAC-SHA2-256-128, -384-192 or -512-256 (RFC 3602, RFC 4868).
//!
//! - AES-GCM: the key `SK_e` is key || 4-byte salt; the 8-byte IV is on the
//!   wire; the AAD is everything from the start of the message to the IV
//!   (the header and the Encrypted payload's generic header).
//! - AES-CBC: a 16-byte IV; the plaintext padded to the block; the ICV is
//!   the first half of the HMAC (16, 24 or 32 bytes) under `SK_a` over
//!   everything from the start of the message to the end of the
//!   ciphertext, checked in constant time before decryption.
//!
//! The plaintext is the inner payloads, padding, and the pad length byte.
//! The Encrypted payload is the message's only payload here, as in every
//! exchange vpngw makes.

use super::crypto::Secret;
use super::message::{self, Header, ParseError, Payload, HEADER_LEN};
use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

/// IKE SA encryption transforms (IKEv2 transform type 1) vpngw takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// ENCR_AES_GCM_16 (20), 128 or 256-bit keys.
    AesGcm16 { key_bytes: usize },
    /// ENCR_AES_CBC (12), 128 or 256-bit keys, with an HMAC-SHA2.
    AesCbc { key_bytes: usize, integ: Integ },
}

/// IKE SA integrity transforms (IKEv2 transform type 3) vpngw takes, for
/// AES-CBC: HMAC-SHA2 truncated to half (RFC 4868).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integ {
    /// AUTH_HMAC_SHA2_256_128 (12).
    Sha256,
    /// AUTH_HMAC_SHA2_384_192 (13).
    Sha384,
    /// AUTH_HMAC_SHA2_512_256 (14).
    Sha512,
}

impl Integ {
    /// The transform id.
    pub fn id(self) -> u16 {
        match self {
            Integ::Sha256 => 12,
            Integ::Sha384 => 13,
            Integ::Sha512 => 14,
        }
    }

    /// strongSwan's name.
    pub fn name(self) -> &'static str {
        match self {
            Integ::Sha256 => "sha256",
            Integ::Sha384 => "sha384",
            Integ::Sha512 => "sha512",
        }
    }

    /// Bytes of the key (the hash's output) and of the ICV (half of it).
    pub fn key_len(self) -> usize {
        match self {
            Integ::Sha256 => 32,
            Integ::Sha384 => 48,
            Integ::Sha512 => 64,
        }
    }

    /// The full HMAC of `data` under `key`.
    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut m = <M as Mac>::new_from_slice(key).expect("any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Integ::Sha256 => run::<Hmac<Sha256>>(key, data),
            Integ::Sha384 => run::<Hmac<Sha384>>(key, data),
            Integ::Sha512 => run::<Hmac<Sha512>>(key, data),
        }
    }
}

impl Encryption {
    /// Bytes of SK_e (GCM: key and 4-byte salt).
    pub fn encr_len(self) -> usize {
        match self {
            Encryption::AesGcm16 { key_bytes } => key_bytes + 4,
            Encryption::AesCbc { key_bytes, .. } => key_bytes,
        }
    }

    /// Bytes of SK_a (none for an AEAD).
    pub fn integ_len(self) -> usize {
        match self {
            Encryption::AesGcm16 { .. } => 0,
            Encryption::AesCbc { integ, .. } => integ.key_len(),
        }
    }

    /// Bytes of the ICV: GCM's tag, or half the HMAC.
    pub fn icv_len(self) -> usize {
        match self {
            Encryption::AesGcm16 { .. } => 16,
            Encryption::AesCbc { integ, .. } => integ.key_len() / 2,
        }
    }

    pub fn iv_len(self) -> usize {
        match self {
            Encryption::AesGcm16 { .. } => 8,
            Encryption::AesCbc { .. } => 16,
        }
    }

    fn block(self) -> usize {
        match self {
            Encryption::AesGcm16 { .. } => 1,
            Encryption::AesCbc { .. } => 16,
        }
    }
}

/// Why an Encrypted payload could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("the message has no Encrypted payload, or not as its only payload")]
    NoSk,
    #[error("the Encrypted payload is too short or not whole blocks")]
    Length,
    #[error("the ICV does not verify")]
    Icv,
    #[error("the pad length exceeds the plaintext")]
    Padding,
    #[error("the keys are of the wrong length for the transform")]
    Keys,
}

/// One direction of an IKE SA's protection: its transform and keys.
pub struct Protection {
    encryption: Encryption,
    sk_e: Secret,
    sk_a: Secret,
}

impl Protection {
    pub fn new(encryption: Encryption, sk_e: &[u8], sk_a: &[u8]) -> Result<Self, SkError> {
        let ok_key = matches!(encryption, Encryption::AesGcm16 { key_bytes: 16 | 32 })
            || matches!(encryption, Encryption::AesCbc { key_bytes: 16 | 32, .. });
        if !ok_key || sk_e.len() != encryption.encr_len() || sk_a.len() != encryption.integ_len() {
            return Err(SkError::Keys);
        }
        Ok(Self { encryption, sk_e: Zeroizing::new(sk_e.to_vec()), sk_a: Zeroizing::new(sk_a.to_vec()) })
    }

    /// The whole message: `header` (its length set), an Encrypted payload
    /// holding `inner` under `iv` ([`Encryption::iv_len`] bytes: unique
    /// per message for GCM, unpredictable for CBC).
    pub fn seal(&self, header: &Header, inner: &[Payload], iv: &[u8]) -> Vec<u8> {
        let e = self.encryption;
        assert_eq!(iv.len(), e.iv_len(), "an IV of the transform's length");
        let mut plain = message::emit_chain(inner);
        let pad = (e.block() - (plain.len() + 1) % e.block()) % e.block();
        plain.extend(std::iter::repeat_n(0u8, pad));
        plain.push(pad as u8);
        let sk_len = 4 + iv.len() + plain.len() + e.icv_len();
        let mut out = Vec::with_capacity(HEADER_LEN + sk_len);
        out.extend_from_slice(&header.spi_i.to_be_bytes());
        out.extend_from_slice(&header.spi_r.to_be_bytes());
        out.push(message::kind::SK);
        out.extend_from_slice(&[header.version, header.exchange, header.flags]);
        out.extend_from_slice(&header.message_id.to_be_bytes());
        out.extend_from_slice(&((HEADER_LEN + sk_len) as u32).to_be_bytes());
        out.push(inner.first().map_or(message::kind::NONE, Payload::kind));
        out.push(0);
        out.extend_from_slice(&(sk_len as u16).to_be_bytes());
        out.extend_from_slice(iv);
        let icv: Vec<u8> = match e {
            Encryption::AesGcm16 { .. } => {
                let (key, salt) = self.sk_e.split_at(self.sk_e.len() - 4);
                let nonce: [u8; 12] = [salt, iv].concat().try_into().expect("4 + 8 bytes");
                let aad = out[..HEADER_LEN + 4].to_vec();
                let tag = match key.len() {
                    16 => Aes128Gcm::new_from_slice(key).expect("16 bytes").encrypt_in_place_detached(
                        (&nonce).into(),
                        &aad,
                        &mut plain,
                    ),
                    _ => Aes256Gcm::new_from_slice(key).expect("32 bytes").encrypt_in_place_detached(
                        (&nonce).into(),
                        &aad,
                        &mut plain,
                    ),
                }
                .expect("an IKE message is far below the GCM limit");
                out.extend_from_slice(&plain);
                tag.to_vec()
            }
            Encryption::AesCbc { integ, .. } => {
                let n = plain.len();
                match self.sk_e.len() {
                    16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&self.sk_e, iv)
                        .expect("key and IV lengths")
                        .encrypt_padded_mut::<NoPadding>(&mut plain, n)
                        .map(|_| ()),
                    _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.sk_e, iv)
                        .expect("key and IV lengths")
                        .encrypt_padded_mut::<NoPadding>(&mut plain, n)
                        .map(|_| ()),
                }
                .expect("padded to whole blocks");
                out.extend_from_slice(&plain);
                let mut mac = integ.mac(&self.sk_a, &out);
                mac.truncate(e.icv_len());
                mac
            }
        };
        out.extend_from_slice(&icv);
        out
    }

    /// Opens a message whose only payload is an Encrypted payload: checks
    /// the ICV, decrypts, and reads the payloads inside.
    pub fn open(&self, bytes: &[u8]) -> Result<(Header, Vec<Payload>), SkError> {
        let e = self.encryption;
        let header = message::parse_header(bytes)?;
        if header.next != message::kind::SK || bytes.len() < HEADER_LEN + 4 {
            return Err(SkError::NoSk);
        }
        let first = bytes[HEADER_LEN];
        let sk_len = u16::from_be_bytes([bytes[HEADER_LEN + 2], bytes[HEADER_LEN + 3]]) as usize;
        if HEADER_LEN + sk_len != bytes.len() {
            return Err(SkError::NoSk);
        }
        let body = HEADER_LEN + 4 + e.iv_len();
        let icv_len = e.icv_len();
        if bytes.len() < body + 1 + icv_len || !(bytes.len() - body - icv_len).is_multiple_of(e.block()) {
            return Err(SkError::Length);
        }
        let iv = &bytes[HEADER_LEN + 4..body];
        let icv = &bytes[bytes.len() - icv_len..];
        let mut plain = bytes[body..bytes.len() - icv_len].to_vec();
        match e {
            Encryption::AesGcm16 { .. } => {
                let (key, salt) = self.sk_e.split_at(self.sk_e.len() - 4);
                let nonce: [u8; 12] = [salt, iv].concat().try_into().expect("4 + 8 bytes");
                let aad = &bytes[..HEADER_LEN + 4];
                match key.len() {
                    16 => Aes128Gcm::new_from_slice(key).expect("16 bytes").decrypt_in_place_detached(
                        (&nonce).into(),
                        aad,
                        &mut plain,
                        icv.into(),
                    ),
                    _ => Aes256Gcm::new_from_slice(key).expect("32 bytes").decrypt_in_place_detached(
                        (&nonce).into(),
                        aad,
                        &mut plain,
                        icv.into(),
                    ),
                }
                .map_err(|_| SkError::Icv)?;
            }
            Encryption::AesCbc { integ, .. } => {
                let mac = integ.mac(&self.sk_a, &bytes[..bytes.len() - icv_len]);
                if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..icv_len], icv)) {
                    return Err(SkError::Icv);
                }
                match self.sk_e.len() {
                    16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&self.sk_e, iv)
                        .expect("key and IV lengths")
                        .decrypt_padded_mut::<NoPadding>(&mut plain)
                        .map(|_| ()),
                    _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.sk_e, iv)
                        .expect("key and IV lengths")
                        .decrypt_padded_mut::<NoPadding>(&mut plain)
                        .map(|_| ()),
                }
                .map_err(|_| SkError::Length)?;
            }
        }
        let pad = *plain.last().expect("at least one byte") as usize;
        if pad + 1 > plain.len() {
            return Err(SkError::Padding);
        }
        plain.truncate(plain.len() - pad - 1);
        let payloads = message::parse_chain(first, &plain, body)?;
        Ok((header, payloads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::message::{exchange, flags, Identity, VERSION};

    fn header() -> Header {
        Header {
            spi_i: 1,
            spi_r: 2,
            next: 0,
            version: VERSION,
            exchange: exchange::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: 1,
            length: 0,
        }
    }

    fn inner() -> Vec<Payload> {
        vec![
            Payload::IdI(Identity { kind: 2, data: b"gw.example".to_vec() }),
            Payload::Auth { method: 2, data: vec![7; 32] },
        ]
    }

    #[test]
    fn every_transform_round_trips_and_refuses_tampering() {
        for e in [
            Encryption::AesGcm16 { key_bytes: 16 },
            Encryption::AesGcm16 { key_bytes: 32 },
            Encryption::AesCbc { key_bytes: 16, integ: Integ::Sha256 },
            Encryption::AesCbc { key_bytes: 32, integ: Integ::Sha256 },
            Encryption::AesCbc { key_bytes: 16, integ: Integ::Sha384 },
            Encryption::AesCbc { key_bytes: 32, integ: Integ::Sha512 },
        ] {
            let p = Protection::new(e, &vec![3; e.encr_len()], &vec![4; e.integ_len()]).unwrap();
            let msg = p.seal(&header(), &inner(), &vec![9; e.iv_len()]);
            let (h, payloads) = p.open(&msg).unwrap();
            assert_eq!((h.message_id, payloads), (1, inner()), "{e:?}");
            assert_eq!(message::parse(&msg).unwrap().payloads.len(), 1, "{e:?}: one SK payload");
            for at in [10, HEADER_LEN + 1, HEADER_LEN + 4 + e.iv_len() + 1, msg.len() - 1] {
                let mut bad = msg.clone();
                bad[at] ^= 1;
                assert!(p.open(&bad).is_err(), "{e:?}: byte {at} changed");
            }
            assert!(p.open(&msg[..msg.len() - 1]).is_err(), "{e:?}: truncated");
        }
        assert!(Protection::new(Encryption::AesGcm16 { key_bytes: 24 }, &[0; 28], &[]).is_err());
        assert!(
            Protection::new(Encryption::AesCbc { key_bytes: 16, integ: Integ::Sha256 }, &[0; 16], &[0; 20]).is_err()
        );
        assert!(
            Protection::new(Encryption::AesCbc { key_bytes: 16, integ: Integ::Sha384 }, &[0; 16], &[0; 32]).is_err()
        );
    }
}
