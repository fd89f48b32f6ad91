//! Publication of the CA certificates, bundle and CRLs to an S3 bucket (for the CRL distribution
//! point and AIA URLs). A CRL never replaces a newer one: its number is compared with the
//! published one, and the upload is conditional on the object it replaces (If-Match).

use super::aws::{ErrorClass, classify, describe};
use super::s3_store::{client, normalise_prefix};
use crate::domain::config::S3Location;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::result::SdkError;
use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::CrlNumber;

pub struct Publisher {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Published {
    pub objects: Vec<String>,
    /// True when a CRL at least as new was already published (nothing replaced).
    pub crl_skipped: bool,
}

/// The CRL number of a DER CRL, if it has one that fits in 64 bits.
pub fn crl_number(der: &[u8]) -> Option<u64> {
    numbered(der).map(|(n, _)| n)
}

/// Who signed a CRL, as far as numbering goes: its issuer name and authority key identifier.
/// Numbers of CRLs of another issuer (the CA before a rotation, another CA at this name) say
/// nothing of ours.
type CrlIssuer = (Vec<u8>, Option<Vec<u8>>);

/// A DER CRL's number and issuer.
fn numbered(der: &[u8]) -> Option<(u64, CrlIssuer)> {
    use der::Encode;
    let crl: CertificateList = CertificateList::from_der(der).ok()?;
    let exts = crl.tbs_cert_list.crl_extensions.unwrap_or_default();
    let find = |oid| exts.iter().find(|e| e.extn_id == oid);
    let aki = find(const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .map(|e| e.extn_value.as_bytes().to_vec());
    let issuer = (crl.tbs_cert_list.issuer.to_der().ok()?, aki);
    let ext = find(const_oid::db::rfc5280::ID_CE_CRL_NUMBER)?;
    let n = CrlNumber::from_der(ext.extn_value.as_bytes()).ok()?;
    let b = n.0.as_bytes();
    if b.len() > 8 {
        return None;
    }
    let mut a = [0u8; 8];
    a[8 - b.len()..].copy_from_slice(b);
    Some((u64::from_be_bytes(a), issuer))
}

impl Publisher {
    pub async fn open(loc: &S3Location) -> Publisher {
        Publisher {
            client: client(loc).await,
            bucket: loc.bucket.clone(),
            prefix: normalise_prefix(&loc.prefix),
        }
    }

    async fn put(
        &self,
        name: &str,
        body: Vec<u8>,
        content_type: &str,
        cond: Option<Cond<'_>>,
    ) -> Result<(), (ErrorClass, String)> {
        let mut p = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{name}", self.prefix))
            .content_type(content_type)
            .body(ByteStream::from(body));
        match cond {
            Some(Cond::Match(etag)) => p = p.if_match(etag),
            Some(Cond::Absent) => p = p.if_none_match("*"),
            None => {}
        }
        p.send()
            .await
            .map(|_| ())
            .map_err(|e| self.failed(name, &e))
    }

    /// An S3 error on the object `name`: its class, and a message naming the object.
    fn failed<E, R>(&self, name: &str, e: &SdkError<E, R>) -> (ErrorClass, String)
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::fmt::Debug,
        R: super::aws::HasStatus,
    {
        let at = format!("s3://{}/{}{name}", self.bucket, self.prefix);
        (classify(e), format!("{at}: {}", describe(e)))
    }

    /// Uploads CA certificates (DER, application/pkix-cert), the PEM bundle, and the CRL (DER as
    /// application/pkix-crl, PEM beside it) unless an equal or newer CRL is already published.
    pub async fn publish(
        &self,
        ca_name: &str,
        ca_certs: &[(String, Vec<u8>)],
        bundle_pem: &[u8],
        crl_der: &[u8],
    ) -> Result<Published, (ErrorClass, String)> {
        let mut out = Published::default();
        for (name, der) in ca_certs {
            self.put(name, der.clone(), "application/pkix-cert", None)
                .await?;
            out.objects.push(name.clone());
        }
        let bundle = format!("{ca_name}-bundle.pem");
        self.put(&bundle, bundle_pem.to_vec(), "application/x-pem-file", None)
            .await?;
        out.objects.push(bundle);

        let ours = numbered(crl_der).ok_or((
            ErrorClass::Fatal,
            "the CRL to publish has no CRL number".to_string(),
        ))?;
        let crl_name = format!("{ca_name}.crl");
        let der_written = self
            .put_if_newer(&crl_name, crl_der, "application/pkix-crl", &ours, numbered)
            .await?;
        // The PEM on its own terms, not only beside a DER just written: a run stopped between
        // the two left the DER new and the PEM one CRL behind, and its rerun, finding the DER
        // published, used to leave it so until the next CRL.
        let pem = der::pem::encode_string("X509 CRL", der::pem::LineEnding::LF, crl_der)
            .map_err(|e| (ErrorClass::Fatal, e.to_string()))?;
        let pem_name = format!("{crl_name}.pem");
        let pem_written = self
            .put_if_newer(
                &pem_name,
                pem.as_bytes(),
                "application/x-pem-file",
                &ours,
                pem_numbered,
            )
            .await?;
        if !der_written {
            // Of this issuer, and numbered past this state's CRLs: the state was made anew,
            // or another CA publishes with this key. Relying parties read that CRL, not ours.
            tracing::warn!(
                ours = ours.0,
                "a CRL of this CA numbered at least as high is already published; not replacing it"
            );
            out.crl_skipped = true;
        }
        out.objects.extend(der_written.then_some(crl_name));
        out.objects.extend(pem_written.then_some(pem_name));
        Ok(out)
    }

    /// Writes `body` as `name` unless the object there holds a CRL of the same issuer numbered
    /// `ours` or higher (`number` reads it), conditionally on the object it replaces (If-Match,
    /// or absent), and again should another writer change it in between. Whether it wrote.
    async fn put_if_newer(
        &self,
        name: &str,
        body: &[u8],
        content_type: &str,
        (ours, issuer): &(u64, CrlIssuer),
        number: fn(&[u8]) -> Option<(u64, CrlIssuer)>,
    ) -> Result<bool, (ErrorClass, String)> {
        for _ in 0..10 {
            let current = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(format!("{}{name}", self.prefix))
                .send()
                .await;
            let cond = match current {
                Ok(obj) => {
                    let etag = obj.e_tag().unwrap_or_default().to_string();
                    let bytes = (obj.body.collect().await)
                        .map_err(|e| (ErrorClass::Retryable, e.to_string()))?
                        .into_bytes();
                    match number(&bytes) {
                        Some((n, by)) if by == *issuer && n >= *ours => return Ok(false),
                        // The CA before a rotation, say: its certificates still name this URL.
                        Some((n, by)) if by != *issuer => tracing::warn!(
                            "{name}: replacing CRL number {n} of another issuer (name or key)"
                        ),
                        _ => {}
                    }
                    Some(etag)
                }
                Err(e) if classify(&e) == ErrorClass::NotFound => None,
                Err(e) => return Err(self.failed(name, &e)),
            };
            let c = match &cond {
                Some(etag) => Cond::Match(etag),
                None => Cond::Absent,
            };
            match self.put(name, body.to_vec(), content_type, Some(c)).await {
                Ok(()) => return Ok(true),
                // Another writer published (or deleted) in between: re-read, compare again.
                Err((ErrorClass::Conflict | ErrorClass::NotFound, _)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err((
            ErrorClass::Retryable,
            format!(
                "the published CRL s3://{}/{}{name} kept changing",
                self.bucket, self.prefix
            ),
        ))
    }
}

/// The number and issuer of a PEM CRL (see [`numbered`]).
fn pem_numbered(pem: &[u8]) -> Option<(u64, CrlIssuer)> {
    let (label, der) = der::pem::decode_vec(pem).ok()?;
    (label == "X509 CRL").then(|| numbered(&der)).flatten()
}

enum Cond<'a> {
    Match(&'a str),
    Absent,
}
