//! X.509's signed structures (Certificate, CertificateList) are the same shape:
//! `SEQUENCE { to-be-signed, signatureAlgorithm, signature BIT STRING }`.

use der::Encode;
use der::asn1::{AnyRef, BitString};
use der::referenced::OwnedToRef;
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef};

/// The signed structure's DER around `tbs_der` exactly as it was signed (not decoded and
/// encoded again), with `algorithm` and `signature`.
pub fn der(
    tbs_der: &[u8],
    algorithm: &AlgorithmIdentifierOwned,
    signature: &[u8],
) -> Result<Vec<u8>, String> {
    #[derive(der::Sequence)]
    struct Signed<'a> {
        tbs: AnyRef<'a>,
        algorithm: AlgorithmIdentifierRef<'a>,
        signature: BitString,
    }
    Signed {
        tbs: der::Decode::from_der(tbs_der).map_err(|e: der::Error| e.to_string())?,
        algorithm: algorithm.owned_to_ref(),
        signature: BitString::from_bytes(signature).map_err(|e| e.to_string())?,
    }
    .to_der()
    .map_err(|e| e.to_string())
}

/// The to-be-signed part of a signed structure (a certificate, a CRL, a PKCS#10 request: the
/// same shape) exactly as received: the bytes its signature covers. None if `der` does not
/// begin with a SEQUENCE holding a first element.
pub fn signed_part(der: &[u8]) -> Option<&[u8]> {
    use der::{Decode, Reader};
    let mut reader = der::SliceReader::new(der).ok()?;
    der::Header::decode(&mut reader).ok()?;
    reader.tlv_bytes().ok()
}

#[cfg(test)]
mod tests {
    use const_oid::db::rfc5912;

    #[test]
    fn the_signed_bytes_are_kept_and_framed() {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x05];
        let alg = spki::AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        };
        let der = super::der(&tbs, &alg, &[1, 2, 3]).unwrap();
        let mut want = vec![0x30, 0x17];
        want.extend_from_slice(&tbs);
        want.extend_from_slice(&[
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
        ]);
        want.extend_from_slice(&[0x03, 0x04, 0x00, 1, 2, 3]);
        assert_eq!(der, want);
        // Not one TLV: refused, not framed.
        assert!(super::der(&tbs[..4], &alg, &[1]).is_err());
        assert!(super::der(&[tbs.as_slice(), &[0]].concat(), &alg, &[1]).is_err());
        // And back: the part signed, as it was framed.
        assert_eq!(super::signed_part(&der), Some(tbs.as_slice()));
        assert_eq!(super::signed_part(&der[..3]), None);
    }
}
