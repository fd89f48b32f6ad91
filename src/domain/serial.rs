//! Certificate serial numbers: 20 bytes from the OS CSPRNG, positive, written as lower-case hex.

/// Parses a serial as openssl prints it (hex, colons optional, `0x` optional) or as decimal
/// digits (the serverless CA's form). Returns the candidate readings as canonical lower-case hex
/// without leading zeros: a string of only digits has two (decimal and hex); the caller picks
/// the one this CA issued, and refuses if both exist.
pub fn parse_serial(s: &str) -> Result<Vec<String>, String> {
    let t = s.trim();
    let bad = || format!("serial {s:?} is neither hex (as openssl prints it) nor decimal");
    let hexish = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
    let h: String = hexish.unwrap_or(t).chars().filter(|c| *c != ':').collect();
    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = vec![canonical_hex(&h)];
    if hexish.is_none() && !t.contains(':') && t.bytes().all(|b| b.is_ascii_digit()) {
        let d = decimal_to_hex(t);
        if d != out[0] {
            out.insert(0, d);
        }
    }
    Ok(out)
}

/// Whether a certificate's serial (the DER INTEGER's bytes) is `serial` (hex), leading zeros
/// aside.
pub fn is_serial(der: &[u8], serial: &str) -> bool {
    base16ct::lower::encode_string(der).trim_start_matches('0') == serial.trim_start_matches('0')
}

pub fn canonical_hex(h: &str) -> String {
    let t = h.to_ascii_lowercase();
    let t = t.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// Decimal digits (the serverless CA's `serial_number`) as canonical hex.
pub fn decimal_to_hex(d: &str) -> String {
    // Big-number base conversion over bytes; serials are at most 20 bytes (~49 digits).
    let mut bytes: Vec<u8> = vec![0];
    for c in d.bytes() {
        let mut carry = (c - b'0') as u32;
        for b in bytes.iter_mut().rev() {
            let v = (*b as u32) * 10 + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            bytes.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    canonical_hex(&base16ct::lower::encode_string(&bytes))
}

/// 20 random bytes, top bit cleared (positive) and first byte non-zero, so the DER INTEGER
/// is exactly 20 bytes (RFC 5280's limit) with at least 150 bits of entropy.
pub fn new_serial() -> Result<[u8; 20], String> {
    let mut b = [0u8; 20];
    loop {
        getrandom::fill(&mut b).map_err(|e| format!("OS random source failed: {e}"))?;
        if positive_20_bytes(&mut b) {
            return Ok(b);
        }
    }
}

/// `n` serials as `new_serial` makes them, drawn from the OS in one call rather than one
/// system call each (10,000 of them at a first issuance).
pub fn new_serials(n: usize) -> Result<Vec<[u8; 20]>, String> {
    let mut out = vec![[0u8; 20]; n];
    getrandom::fill(out.as_flattened_mut()).map_err(|e| format!("OS random source failed: {e}"))?;
    for b in &mut out {
        if !positive_20_bytes(b) {
            *b = new_serial()?;
        }
    }
    Ok(out)
}

/// Clears the top bit; false when the first byte is then zero (the draw is discarded).
fn positive_20_bytes(b: &mut [u8; 20]) -> bool {
    b[0] &= 0x7f;
    b[0] != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificates_serial_matches_its_hex_with_or_without_leading_zeros() {
        // A DER INTEGER whose top bit is set carries a leading zero byte.
        assert!(is_serial(&[0x00, 0x8f, 0x01], "8f01"));
        assert!(is_serial(&[0x05, 0x01], "0501"));
        assert!(is_serial(&[0x05, 0x01], "501"));
        assert!(!is_serial(&[0x05, 0x01], "5010"));
    }

    #[test]
    fn parses_openssl_hex_and_decimal() {
        assert_eq!(parse_serial("4F:1A:00").unwrap(), ["4f1a00"]);
        assert_eq!(parse_serial("0x00ff").unwrap(), ["ff"]);
        assert_eq!(parse_serial("255255").unwrap(), ["3e517", "255255"]);
        assert_eq!(parse_serial("7").unwrap(), ["7"]);
        assert_eq!(
            parse_serial("1234567890123456789012345678901234567890").unwrap()[0],
            "3a0c92075c0dbf3b8acbc5f96ce3f0ad2"
        );
        assert!(parse_serial("xyz").is_err());
        assert!(parse_serial("").is_err());
    }

    /// openssl prints a serial with a leading zero nibble ("04C0..."); the canonical form drops
    /// it, and so does the index lookup (regression: such revocations were "unknown serial").
    #[test]
    fn leading_zero_nibble_is_canonical() {
        let key = "04c0a83c72e5b9ce6daf7d216e4b1f8e4db9fe6b";
        assert_eq!(
            parse_serial("04:C0:A8:3C:72:E5:B9:CE:6D:AF:7D:21:6E:4B:1F:8E:4D:B9:FE:6B").unwrap(),
            [canonical_hex(key)]
        );
    }

    #[test]
    fn serials_are_positive_20_bytes() {
        for _ in 0..100 {
            let s = new_serial().unwrap();
            assert!(s[0] != 0 && s[0] < 0x80);
        }
        assert_ne!(new_serial().unwrap(), new_serial().unwrap());
    }

    #[test]
    fn batched_serials_are_positive_20_bytes_and_distinct() {
        let serials = new_serials(5000).unwrap();
        assert_eq!(serials.len(), 5000);
        assert!(serials.iter().all(|s| s[0] != 0 && s[0] < 0x80));
        let distinct: std::collections::HashSet<_> = serials.iter().collect();
        assert_eq!(distinct.len(), serials.len());
        // Every bit below the cleared top one varies across the batch.
        let or = serials.iter().fold([0u8; 20], |mut acc, s| {
            acc.iter_mut().zip(s).for_each(|(a, b)| *a |= b);
            acc
        });
        assert_eq!(or[0], 0x7f);
        assert!(or[1..].iter().all(|b| *b == 0xff));
        assert!(new_serials(0).unwrap().is_empty());
    }
}
