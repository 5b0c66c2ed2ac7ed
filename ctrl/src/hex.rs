//! Hex text to bytes, for keys on the command line and in configuration.

/// Decodes `s` (an optional `0x`, then pairs of hex digits).
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("not hex: {c:?}"));
    }
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", s.len()));
    }
    let nibble = |b: u8| (b as char).to_digit(16).expect("checked above") as u8;
    Ok(s.as_bytes().chunks(2).map(|p| nibble(p[0]) << 4 | nibble(p[1])).collect())
}

/// Encodes `bytes` as lowercase hex digits.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_and_refuses() {
        assert_eq!(super::decode("0x0aFf").unwrap(), vec![0x0a, 0xff]);
        assert!(super::decode("abc").unwrap_err().contains("odd"));
        assert!(super::decode("zz").unwrap_err().contains("not hex"));
        assert!(super::decode("é1").is_err());
        assert_eq!(super::encode(&[0x0a, 0xff]), "0aff");
        assert_eq!(super::decode(&super::encode(&[1, 2, 250])).unwrap(), [1, 2, 250]);
    }
}
