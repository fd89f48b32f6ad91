//! `gitca init`: a new CA on the embedded defaults. Keys go to the data directory (mode 0600),
//! never into the repository; the CA certificates and `gitca.yaml` are committed.

use super::context::{CONFIG_FILE, RepoArgs, key_path, refuse_key_in_repo};
use super::outputs::pem;
use crate::adapters::git::GitRepo;
use crate::adapters::kms::{self, KmsSigner};
use crate::adapters::signer::{KeyAlgorithm, LocalSigner, Signer, sign_verified};
use crate::domain::config::Config;
use crate::domain::duration::Span;
use crate::domain::names::Subject;
use crate::domain::profile::{self, CaParams, Urls};
use crate::domain::serial::new_serial;
use der::Encode;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub name: String,
    /// A single self-signed CA instead of root + issuing CA.
    pub single: bool,
    pub algorithm: KeyAlgorithm,
    pub root_lifetime: Span,
    pub issuing_lifetime: Span,
    /// pathLenConstraint of the root (the issuing CA always gets 0).
    pub path_len: Option<u8>,
    pub organization: Option<String>,
    /// With a KMS issuing key but no root key: write the issuing CA's CSR here.
    pub csr_out: Option<std::path::PathBuf>,
}

#[derive(Debug)]
pub struct InitOutcome {
    pub commit: String,
    pub keys: Vec<std::path::PathBuf>,
    pub certificates: Vec<String>,
    pub csr: Option<std::path::PathBuf>,
}

fn write_key(path: &Path, pem: &str) -> Result<(), String> {
    if path.exists() {
        return Err(format!(
            "{} exists; refusing to overwrite a CA key",
            path.display()
        ));
    }
    let dir = path.parent().ok_or("key path has no folder")?;
    // Only a folder made here is made private: one that exists may be shared (a home folder).
    let made = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        if made {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    let mut f = o
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn default_config(name: &str, single: bool) -> String {
    let chain = if single {
        "[]".to_string()
    } else {
        "[ca/root-ca.pem]".to_string()
    };
    let cert = if single {
        "ca/ca.pem"
    } else {
        "ca/issuing-ca.pem"
    };
    format!(
        "# gitca configuration; see docs/format.md\nca:\n  name: {name}\n  certificate: {cert}\n  chain: {chain}\n\
issuance:\n  backdate: 5m\n  default_lifetime: 30d\n  renew_before: 10d\ncrl:\n  lifetime: 7d\n  overlap: 2d\n\
output:\n  dir: issued\n  crl: crl/{name}.crl\n  bundle: ca/bundle.pem\n"
    )
}

pub async fn init(args: &RepoArgs, opts: &InitOptions) -> Result<InitOutcome, String> {
    let repo = GitRepo::open(&args.repo, args.dir.as_deref())?;
    let head = repo
        .resolve("HEAD")
        .map_err(|e| format!("{e}; commit something first"))?;
    repo.current_branch()?;
    let wd = repo.workdir().ok_or("init needs a work tree")?;
    // Only an absent file means the defaults: one gitca cannot read is never replaced by them.
    let existing = match std::fs::read(wd.join(CONFIG_FILE)) {
        Ok(bytes) => {
            Some(String::from_utf8(bytes).map_err(|_| format!("{CONFIG_FILE}: not UTF-8 text"))?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{CONFIG_FILE}: {e}")),
    };
    let config_text = existing
        .clone()
        .unwrap_or_else(|| default_config(&opts.name, opts.single));
    let config = Config::parse(CONFIG_FILE, &config_text)?;
    let single = config.ca.chain.is_empty();
    if config.ca.chain.len() > 1 {
        return Err(
            "init creates a root and one issuing CA; ca.chain may name at most the root".into(),
        );
    }
    let issuing_key = key_path(&config, "issuing-ca.key")?;
    refuse_key_in_repo(&issuing_key, &repo)?;
    // Any certificate init would write: a committed root is never replaced by a new one.
    for cert in std::iter::once(&config.ca.certificate).chain(&config.ca.chain) {
        if repo.read_file(&head, cert)?.is_some() {
            return Err(format!(
                "{cert} already exists in HEAD; this CA is initialised"
            ));
        }
    }

    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?;
    let names = Names {
        organization: opts.organization.clone(),
        root: if single {
            config.ca.name.clone()
        } else {
            format!("{} Root CA", config.ca.name)
        },
        issuing: format!("{} Issuing CA", config.ca.name),
    };
    let mut keys = Vec::new();
    let mut files = if let Some(kms_cfg) = &config.signer.kms {
        let client = kms::client(kms_cfg.region.as_deref()).await;
        let open = |key: String| {
            let client = client.clone();
            async move {
                KmsSigner::open(client, &key, kms_cfg.max_in_flight, kms_cfg.max_retries).await
            }
        };
        let issuing = open(kms_cfg.key.clone()).await?;
        if single {
            ca_files(&config, &names, now, opts, &issuing, None).await?
        } else if let Some(root_key) = &kms_cfg.root_key {
            let root_signer = open(root_key.clone()).await?;
            ca_files(&config, &names, now, opts, &root_signer, Some(&issuing)).await?
        } else {
            let out = opts.csr_out.as_ref().ok_or(
                "signer.kms has no root_key: give --csr-out FILE to write a CSR for the issuing CA, have your root sign it, \
                 and commit the certificates named in ca.certificate and ca.chain",
            )?;
            let csr = issuing_csr(&issuing, &names).await?;
            std::fs::write(out, pem("CERTIFICATE REQUEST", &csr)?)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            return Ok(InitOutcome {
                commit: head,
                keys,
                certificates: vec![],
                csr: Some(out.clone()),
            });
        }
    } else {
        let (root_signer, root_pem) = LocalSigner::generate(opts.algorithm)?;
        if single {
            let files = ca_files(&config, &names, now, opts, &root_signer, None).await?;
            write_key(&issuing_key, &root_pem)?;
            keys.push(issuing_key);
            files
        } else {
            let root_key = key_path(&config, "root-ca.key")?;
            refuse_key_in_repo(&root_key, &repo)?;
            // Both refused before either is written: a run stopped at the second key left the
            // first behind, and every later init refused it.
            if let Some(k) = [&root_key, &issuing_key].into_iter().find(|k| k.exists()) {
                return Err(format!(
                    "{} exists; refusing to overwrite a CA key",
                    k.display()
                ));
            }
            let (issuing, issuing_pem) = LocalSigner::generate(opts.algorithm)?;
            let files = ca_files(&config, &names, now, opts, &root_signer, Some(&issuing)).await?;
            // Keys are written only once both certificates exist, so a failure leaves nothing.
            write_key(&root_key, &root_pem)?;
            if let Err(e) = write_key(&issuing_key, &issuing_pem) {
                // The root key alone certifies nothing: removed, so init can run again.
                let _ = std::fs::remove_file(&root_key);
                return Err(e);
            }
            keys.push(root_key);
            keys.push(issuing_key);
            files
        }
    };
    files.insert(CONFIG_FILE.to_string(), Some(config_text.into_bytes()));
    let certificates = files
        .keys()
        .filter(|k| k.as_str() != CONFIG_FILE)
        .cloned()
        .collect();
    let files = files
        .into_iter()
        .map(|(path, bytes)| (path, bytes.map(crate::adapters::git::Content::from)))
        .collect();
    let committed = repo.commit_outputs(
        &head,
        &files,
        &format!(
            "gitca init: CA {}\n\nPrivate keys are kept outside the repository.\n",
            config.ca.name
        ),
    );
    let commit = match committed {
        Ok(commit) => commit.unwrap_or(head),
        // The keys this run made certify nothing committed: removed, so init can run again.
        Err(e) => {
            for k in &keys {
                if let Err(rm) = std::fs::remove_file(k) {
                    tracing::error!("{}: {rm}; remove it before running init again", k.display());
                }
            }
            return Err(format!(
                "{e}; nothing was committed and no key kept (check the work tree for the CA \
                 certificates it wrote)"
            ));
        }
    };
    Ok(InitOutcome {
        commit,
        keys,
        certificates,
        csr: None,
    })
}

/// The CA certificate files: one self-signed CA (`issuing` None), or a root and the issuing CA
/// it signs.
async fn ca_files(
    config: &Config,
    names: &Names,
    now: OffsetDateTime,
    opts: &InitOptions,
    root: &dyn Signer,
    issuing: Option<&dyn Signer>,
) -> Result<BTreeMap<String, Option<Vec<u8>>>, String> {
    let cert = |der: &[u8]| -> Result<Option<Vec<u8>>, String> {
        Ok(Some(pem("CERTIFICATE", der)?.into_bytes()))
    };
    let mut files = BTreeMap::new();
    match issuing {
        None => {
            let der = self_signed(
                root,
                &names.root,
                names,
                now,
                opts.issuing_lifetime,
                Some(0),
            )
            .await?;
            files.insert(config.ca.certificate.clone(), cert(&der)?);
        }
        Some(issuing) => {
            let root_der = self_signed(
                root,
                &names.root,
                names,
                now,
                opts.root_lifetime,
                opts.path_len,
            )
            .await?;
            let issuing_der = subordinate(root, &root_der, issuing, names, now, opts).await?;
            files.insert(config.ca.chain[0].clone(), cert(&root_der)?);
            files.insert(config.ca.certificate.clone(), cert(&issuing_der)?);
        }
    }
    Ok(files)
}

struct Names {
    organization: Option<String>,
    root: String,
    issuing: String,
}

impl Names {
    fn subject(&self, cn: &str) -> Result<x509_cert::name::Name, String> {
        Subject {
            common_name: Some(cn.to_string()),
            organization: self.organization.clone(),
            ..Default::default()
        }
        .to_name()
    }
}

async fn self_signed(
    signer: &dyn Signer,
    cn: &str,
    names: &Names,
    now: OffsetDateTime,
    lifetime: Span,
    path_len: Option<u8>,
) -> Result<Vec<u8>, String> {
    let tbs = profile::ca(
        &CaParams {
            subject: names.subject(cn)?,
            public_key: signer.public_key().clone(),
            self_algorithm: signer.algorithm(),
            serial: new_serial()?.to_vec(),
            not_before: now,
            not_after: now + lifetime.as_time(),
            path_len,
        },
        None,
        &Urls::default(),
    )?;
    let sig = sign_verified(signer, &tbs.tbs_der)
        .await
        .map_err(|e| e.to_string())?;
    tbs.assemble(&sig)
}

async fn subordinate(
    root_signer: &dyn Signer,
    root_der: &[u8],
    issuing: &dyn Signer,
    names: &Names,
    now: OffsetDateTime,
    opts: &InitOptions,
) -> Result<Vec<u8>, String> {
    use der::Decode;
    let root = x509_cert::Certificate::from_der(root_der).map_err(|e| e.to_string())?;
    let root_issuer = super::context::issuer_of(&root)?;
    let tbs = profile::ca(
        &CaParams {
            subject: names.subject(&names.issuing)?,
            public_key: issuing.public_key().clone(),
            self_algorithm: issuing.algorithm(),
            serial: new_serial()?.to_vec(),
            not_before: now,
            not_after: now
                + opts
                    .issuing_lifetime
                    .as_time()
                    .min(opts.root_lifetime.as_time()),
            path_len: Some(0),
        },
        Some(&root_issuer),
        &Urls::default(),
    )?;
    let sig = sign_verified(root_signer, &tbs.tbs_der)
        .await
        .map_err(|e| e.to_string())?;
    tbs.assemble(&sig)
}

/// A PKCS#10 request for the issuing CA's key, signed by that key (proof of possession), to take
/// to an external root.
async fn issuing_csr(issuing: &dyn Signer, names: &Names) -> Result<Vec<u8>, String> {
    use x509_cert::request::{CertReq, CertReqInfo, Version};
    let info = CertReqInfo {
        version: Version::V1,
        subject: names.subject(&names.issuing)?,
        public_key: issuing.public_key().clone(),
        attributes: Default::default(),
    };
    let tbs = info.to_der().map_err(|e| e.to_string())?;
    let sig = sign_verified(issuing, &tbs)
        .await
        .map_err(|e| e.to_string())?;
    CertReq {
        info,
        algorithm: issuing.algorithm(),
        signature: der::asn1::BitString::from_bytes(&sig).map_err(|e| e.to_string())?,
    }
    .to_der()
    .map_err(|e| e.to_string())
}
