//! `gitca.yaml`: the CA repository's configuration, parsed strictly.

use super::duration::Span;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ca: CaConfig,
    #[serde(default)]
    pub signer: SignerConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub issuance: IssuanceConfig,
    #[serde(default)]
    pub crl: CrlConfig,
    #[serde(default)]
    pub aia: AiaConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub orphans: OrphanConfig,
    #[serde(default)]
    pub publish: PublishConfig,
    #[serde(default)]
    pub events: EventsConfig,
    /// Read the serverless CA's GitOps layout (`certs/<env>/tls.json`) in place.
    #[serde(default)]
    pub serverless: Option<ServerlessConfig>,
}

/// The serverless CA's layout, read in place beside (or instead of) `requests/`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerlessConfig {
    /// The environment (`certs/<env>/`) this CA takes over; absent: every environment.
    #[serde(default)]
    pub env: Option<String>,
    /// What the serverless CA silently fixed: `strict` rejects, `compatible` keeps its old
    /// behaviour (drop the SAN or usage, clamp the lifetime) and says so as a warning.
    #[serde(default)]
    pub mode: ServerlessMode,
    /// The serverless CA's `max_cert_lifetime` in days (its Terraform default is 365).
    #[serde(default = "d_max_cert_lifetime")]
    pub max_lifetime_days: u64,
    /// The custom extension OIDs the serverless CA was configured to allow.
    #[serde(default)]
    pub extension_allowlist: Vec<String>,
    /// gitca signs with the serverless CA's issuing key: serials in `revoked.json` that gitca
    /// did not issue are still this CA's, so they go on its CRL. Without it they are shown as
    /// the previous CA's and stay on that CA's CRL.
    #[serde(default)]
    pub revoke_previous_serials: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerlessMode {
    #[default]
    Strict,
    Compatible,
}

fn d_max_cert_lifetime() -> u64 {
    365
}

/// Where apply sends its events (besides `apply --events FILE`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// An SNS topic (the serverless CA's notification channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_topic_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_region: Option<String>,
    /// An HTTP(S) endpoint that receives one JSON POST per run (e.g. a Slack incoming webhook:
    /// the body has a `text` summary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Days before expiry at which an `expiring` event is sent, once per certificate and threshold.
    #[serde(default = "d_expiry_days")]
    pub expiry_days: Vec<u32>,
}

fn d_expiry_days() -> Vec<u32> {
    vec![30, 15, 7, 1]
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            sns_topic_arn: None,
            sns_region: None,
            webhook_url: None,
            expiry_days: d_expiry_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    pub name: String,
    pub certificate: String,
    #[serde(default)]
    pub chain: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSignerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsSignerConfig>,
}

/// The CA key in AWS KMS: it never leaves KMS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSignerConfig {
    /// Key id, alias (`alias/...`) or ARN of the issuing CA's key.
    pub key: String,
    /// The root CA's key, for `gitca init` (root and issuing may use different keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Signatures in flight at once.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: usize,
    /// Retries of a throttled or failed (5xx) Sign call.
    #[serde(default = "d_retries")]
    pub max_retries: u32,
}

fn d_in_flight() -> usize {
    16
}
fn d_retries() -> u32 {
    8
}

/// An S3 bucket and prefix (the state, or where to publish).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Location {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override for S3-compatible stores (AWS_ENDPOINT_URL_S3 works too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    /// Server-side encryption with this KMS key (SSE-KMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_kms_key_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSignerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceConfig {
    #[serde(default = "d_backdate")]
    pub backdate: Span,
    #[serde(default = "d_lifetime")]
    pub default_lifetime: Span,
    #[serde(default = "d_renew")]
    pub renew_before: Span,
}

fn d_backdate() -> Span {
    Span(std::time::Duration::from_secs(300))
}
fn d_lifetime() -> Span {
    Span::days(30)
}
fn d_renew() -> Span {
    Span::days(10)
}

impl Default for IssuanceConfig {
    fn default() -> Self {
        IssuanceConfig {
            backdate: d_backdate(),
            default_lifetime: d_lifetime(),
            renew_before: d_renew(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrlConfig {
    #[serde(default = "d_crl_lifetime")]
    pub lifetime: Span,
    #[serde(default = "d_overlap")]
    pub overlap: Span,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_point: Option<String>,
}

fn d_crl_lifetime() -> Span {
    Span::days(7)
}
fn d_overlap() -> Span {
    Span::days(2)
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            lifetime: d_crl_lifetime(),
            overlap: d_overlap(),
            distribution_point: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AiaConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_issuers: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    #[serde(default = "d_out_dir")]
    pub dir: String,
    #[serde(default = "d_out_crl")]
    pub crl: String,
    #[serde(default = "d_out_bundle")]
    pub bundle: String,
}

fn d_out_dir() -> String {
    "issued".into()
}
fn d_out_crl() -> String {
    "crl/ca.crl".into()
}
fn d_out_bundle() -> String {
    "ca/bundle.pem".into()
}

impl OutputConfig {
    /// The CRL in PEM, written beside the DER one.
    pub fn crl_pem(&self) -> String {
        format!("{}.pem", self.crl)
    }

    /// Whether gitca writes `path` (relative to the CA folder): the output folder and what is
    /// below it, the CRL in both encodings, or the bundle.
    pub fn holds(&self, path: &str) -> bool {
        path == self.bundle
            || path == self.crl
            || path == self.crl_pem()
            || (path.strip_prefix(self.dir.as_str()))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: d_out_dir(),
            crl: d_out_crl(),
            bundle: d_out_bundle(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrphanConfig {
    #[serde(default)]
    pub revoke: bool,
}

impl Config {
    pub fn parse(file: &str, text: &str) -> Result<Config, String> {
        let cfg: Config = serde_yaml_ng::from_str(text)
            .map_err(|e| format!("{file}: invalid gitca config: {e}"))?;
        cfg.validate().map_err(|e| format!("{file}: {e}"))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.ca.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!(
                "ca.name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
            ));
        }
        for p in [
            &self.ca.certificate,
            &self.output.dir,
            &self.output.crl,
            &self.output.bundle,
        ]
        .into_iter()
        .chain(self.ca.chain.iter())
        {
            super::names::check_repo_path(p)?;
        }
        if !self.output.crl.ends_with(".crl") {
            return Err(format!("output.crl {:?} must end in .crl", self.output.crl));
        }
        // gitca owns its outputs and rewrites them: they may not overlap what people commit.
        let inputs = [
            "gitca.yaml",
            "requests",
            "policies",
            "revocations",
            "revocations.yaml",
            "revocations.yml",
            "certs",
        ];
        let under = |p: &str, q: &str| {
            p == q || p.starts_with(&format!("{q}/")) || q.starts_with(&format!("{p}/"))
        };
        let crl_pem = self.output.crl_pem();
        let outputs = [
            ("output.dir", &self.output.dir),
            ("output.crl", &self.output.crl),
            ("output.crl (PEM)", &crl_pem),
            ("output.bundle", &self.output.bundle),
        ];
        for (what, out) in outputs {
            let taken = inputs
                .iter()
                .copied()
                .chain(std::iter::once(self.ca.certificate.as_str()))
                .chain(self.ca.chain.iter().map(String::as_str))
                // In any case: `Revocations.YAML` is a misnamed revocation list the plan
                // reports, and a case-insensitive checkout makes `Requests/` `requests/`.
                .find(|i| under(&out.to_ascii_lowercase(), &i.to_ascii_lowercase()));
            if let Some(i) = taken {
                return Err(format!(
                    "{what} {out:?} overlaps {i:?}; outputs must not touch committed inputs"
                ));
            }
        }
        // Two outputs at one path would overwrite each other on every run (the CRL's PEM and
        // the bundle alternating, each run committing).
        // (So the CRL and the bundle lie outside output.dir, which gitca prunes.)
        for (i, (a, pa)) in outputs.iter().enumerate() {
            if let Some((b, pb)) = outputs[i + 1..].iter().find(|(_, pb)| under(pa, pb)) {
                return Err(format!(
                    "{a} {pa:?} overlaps {b} {pb:?}; each output needs its own path"
                ));
            }
        }
        // Written into every certificate as IA5String URIs.
        for (what, url) in [
            ("crl.distribution_point", &self.crl.distribution_point),
            ("aia.ca_issuers", &self.aia.ca_issuers),
        ] {
            if let Some(u) = url
                && !super::names::is_absolute_uri(u)
            {
                return Err(format!(
                    "{what} {u:?} is not a URL of the characters RFC 3986 allows (percent-encode \
                     others)"
                ));
            }
        }
        if self.signer.local.is_some() && self.signer.kms.is_some() {
            return Err("signer: give either local or kms, not both".into());
        }
        if self.state.dir.is_some() && self.state.s3.is_some() {
            return Err("state: give either dir or s3, not both".into());
        }
        if let Some(k) = &self.signer.kms
            && (k.max_in_flight == 0 || k.max_in_flight > 1024)
        {
            return Err("signer.kms.max_in_flight must be between 1 and 1024".into());
        }
        if let Some(sl) = &self.serverless {
            if sl.max_lifetime_days == 0 || sl.max_lifetime_days > 36500 {
                return Err("serverless.max_lifetime_days must be between 1 and 36500".into());
            }
            if let Some(env) = &sl.env
                && !super::serverless::valid_env_name(env)
            {
                return Err(format!(
                    "serverless.env {env:?}: only letters, digits, '-', '_' and '.'"
                ));
            }
            for o in &sl.extension_allowlist {
                const_oid::ObjectIdentifier::new(o).map_err(|_| {
                    format!("serverless.extension_allowlist: {o:?} is not a dotted OID")
                })?;
            }
        }
        if self.crl.overlap >= self.crl.lifetime {
            return Err("crl.overlap must be shorter than crl.lifetime".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "ca: {name: t, certificate: ca/ca.pem}\n";

    #[test]
    fn outputs_may_not_overwrite_inputs() {
        assert!(Config::parse("gitca.yaml", BASE).is_ok());
        for bad in [
            "output: {bundle: gitca.yaml}",
            "output: {bundle: requests/x.yaml}",
            "output: {dir: policies}",
            "output: {dir: requests/issued}",
            "output: {bundle: ca/ca.pem}",
            "output: {dir: out, crl: out/ca.crl}",
            "output: {crl: revocations/x.crl}",
            // Defect `output-named-like-a-revocation-list`: written, then reported by every
            // plan as a misnamed revocation list (a rejection, exit 3).
            "output: {bundle: revocations.yml}",
            "output: {bundle: Revocations.YAML}",
            "output: {dir: Requests}",
        ] {
            let e = Config::parse("gitca.yaml", &format!("{BASE}{bad}\n")).unwrap_err();
            assert!(
                e.contains("gitca.yaml") && (e.contains("overlaps") || e.contains("outside")),
                "{bad}: {e}"
            );
        }
    }

    /// Defects found by review: an output at the CRL's PEM (`crl/x.crl.pem` as the bundle)
    /// alternated between the two contents, committing on every run; an output under `.git`
    /// was written into git's folder and failed the commit after signing.
    #[test]
    fn outputs_may_not_share_a_path_or_lie_in_git_s_folder() {
        for (bad, why) in [
            ("output: {crl: crl/x.crl, bundle: crl/x.crl.pem}", "overlap"),
            ("output: {crl: crl/x.crl, bundle: crl/x.crl}", "overlap"),
            (
                "output: {crl: crl/x.crl, bundle: crl/x.crl/b.pem}",
                "overlap",
            ),
            ("output: {bundle: .git/info/attributes}", ".git"),
            ("output: {dir: crl/x.crl.pem, crl: crl/x.crl}", "overlap"),
            (
                "crl: {distribution_point: \"http://pki.example.com/a b.crl\"}",
                "RFC 3986",
            ),
            (
                "aia: {ca_issuers: \"http://pki.exämple.com/ca.crt\"}",
                "RFC 3986",
            ),
            ("output: {dir: issued/.GIT/x}", ".git"),
        ] {
            let e = Config::parse("gitca.yaml", &format!("{BASE}{bad}\n")).unwrap_err();
            assert!(e.contains("gitca.yaml") && e.contains(why), "{bad}: {e}");
        }
        assert!(
            Config::parse(
                "gitca.yaml",
                &format!("{BASE}output: {{bundle: ca/b.pem, crl: crl/x.crl}}\n")
            )
            .is_ok()
        );
    }
}
