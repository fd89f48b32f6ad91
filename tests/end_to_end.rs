//! The whole loop on the embedded defaults, checked by independent verifiers: openssl
//! (`verify -crl_check`), pkilint, and x509-parser's signature verification.

mod common;
use common::*;
use std::path::Path;

fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read(path).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    p.contents
}

/// x509-parser (a second, independent implementation) parses and verifies `leaf` under `issuer`.
fn rust_verify(issuer: &Path, leaf: &Path) {
    let i = pem_der(issuer);
    let l = pem_der(leaf);
    let (_, ic) = x509_parser::parse_x509_certificate(&i).unwrap();
    let (_, lc) = x509_parser::parse_x509_certificate(&l).unwrap();
    lc.verify_signature(Some(ic.public_key()))
        .unwrap_or_else(|e| {
            panic!(
                "{}: signature does not verify under {}: {e:?}",
                leaf.display(),
                issuer.display()
            )
        });
    assert_eq!(lc.issuer(), ic.subject());
    let aki = lc
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.clone()
            }
            _ => None,
        })
        .expect("AKI");
    let ski = ic
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.clone()),
            _ => None,
        })
        .expect("SKI");
    assert_eq!(
        aki.0,
        ski.0,
        "{}: AKI is not the issuer's SKI",
        leaf.display()
    );
}

fn rust_verify_crl(issuer: &Path, crl: &Path) {
    let i = pem_der(issuer);
    let (_, ic) = x509_parser::parse_x509_certificate(&i).unwrap();
    let der = std::fs::read(crl).unwrap();
    let (_, c) = x509_parser::parse_x509_crl(&der).unwrap();
    c.verify_signature(ic.public_key())
        .expect("CRL signature verifies");
}

/// pkilint on a certificate: no warning or error, except pkilint's known false positive on
/// `spiffe://` URIs (it applies generic URI syntax that rejects SPIFFE ids; documented in README).
fn lint_cert(path: &Path) {
    let (ok, out) = pkilint(&["lint_pkix_cert", "lint", "-s", "WARNING"], path);
    if ok {
        return;
    }
    let real: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("(WARNING)") || l.contains("(ERROR)") || l.contains("(FATAL)"))
        .filter(|l| !(l.contains("pkix.invalid_uri_syntax") && l.contains("spiffe://")))
        .collect();
    assert!(
        real.is_empty(),
        "pkilint findings for {}:\n{out}",
        path.display()
    );
}

struct Flow {
    env: Env,
}

impl Flow {
    /// example-repo without its revocation, a CA of `alg`, one apply.
    fn new(alg: &str) -> Flow {
        let env = Env::from(EXAMPLE, &["revocations.yaml"]);
        env.init(&["--key-algorithm", alg]);
        // The example has one request that policy rejects: apply exits 3 and issues the rest.
        env.ok(&["apply"], 3);
        Flow { env }
    }

    fn verify_all(&self) -> usize {
        let e = &self.env;
        let leaves = leaf_files(&e.path("issued"));
        assert!(
            leaves.len() >= 6,
            "expected the example's certificates, got {leaves:?}"
        );
        if have("openssl") {
            for l in &leaves {
                let (ok, out) = openssl_verify(
                    &e.path("ca/root-ca.pem"),
                    Some(&e.path("ca/issuing-ca.pem")),
                    &e.path("crl/example-ca.crl.pem"),
                    l,
                );
                assert!(ok, "openssl verify failed for {}: {out}", l.display());
            }
        }
        for l in &leaves {
            rust_verify(&e.path("ca/issuing-ca.pem"), l);
        }
        rust_verify(&e.path("ca/root-ca.pem"), &e.path("ca/issuing-ca.pem"));
        rust_verify_crl(&e.path("ca/issuing-ca.pem"), &e.path("crl/example-ca.crl"));
        leaves.len()
    }

    fn pkilint_all(&self) {
        let e = &self.env;
        if !have("lint_pkix_cert") {
            return;
        }
        for l in leaf_files(&e.path("issued")) {
            lint_cert(&l);
            let (ok, out) = pkilint(
                &[
                    "lint_pkix_signer_signee_cert_chain",
                    "lint",
                    "-s",
                    "WARNING",
                    e.path("ca/issuing-ca.pem").to_str().unwrap(),
                ],
                &l,
            );
            assert!(ok, "pkilint chain findings for {}:\n{out}", l.display());
        }
        lint_cert(&e.path("ca/root-ca.pem"));
        lint_cert(&e.path("ca/issuing-ca.pem"));
        let (ok, out) = pkilint(
            &[
                "lint_pkix_signer_signee_cert_chain",
                "lint",
                "-s",
                "WARNING",
                e.path("ca/root-ca.pem").to_str().unwrap(),
            ],
            &e.path("ca/issuing-ca.pem"),
        );
        assert!(ok, "pkilint chain findings for the issuing CA:\n{out}");
        let (ok, out) = pkilint(
            &[
                "lint_crl", "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING",
            ],
            &e.path("crl/example-ca.crl.pem"),
        );
        assert!(ok, "pkilint CRL findings:\n{out}");
    }

    /// Commits the example's revocation of old-laptop and applies it.
    fn revoke_old_laptop(&self) -> std::path::PathBuf {
        let e = &self.env;
        let saved = e.tmp().join("old-laptop.pem");
        std::fs::copy(e.path("issued/clients/old-laptop.pem"), &saved).unwrap();
        std::fs::copy(
            Path::new(EXAMPLE).join("revocations.yaml"),
            e.path("revocations.yaml"),
        )
        .unwrap();
        e.commit_all("revoke old-laptop");
        let (plan, code) = e.plan_json(&[]);
        assert_eq!(code, 3, "rejected request still present");
        let revs = plan["revocations"].as_array().unwrap();
        assert_eq!(revs.len(), 1);
        assert_eq!(revs[0]["action"], "revoke");
        assert_eq!(revs[0]["serials"].as_array().unwrap().len(), 1);
        e.ok(&["apply"], 3);
        assert!(
            !e.path("issued/clients/old-laptop.pem").exists(),
            "a revoked certificate is removed from the outputs"
        );
        saved
    }
}

#[test]
fn example_repo_p256_verifies_lints_revokes_and_is_idempotent() {
    let f = Flow::new("p256");
    let n = f.verify_all();
    f.pkilint_all();

    // The rejected request got its coded finding, the others were issued.
    let (plan, code) = f.env.plan_json(&[]);
    assert_eq!(code, 3);
    let rejected: Vec<_> = plan["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0]["id"],
        "requests/servers/rejected-outside-domain.yaml"
    );
    assert_eq!(rejected[0]["findings"][0]["code"], "dns-not-allowed");
    assert_eq!(
        plan["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "unchanged")
            .count(),
        n
    );

    // Apply again on the same commit: nothing signed, no commit.
    let before = f.env.head();
    let out = f.env.ok(&["apply"], 3);
    assert!(
        out.contains("nothing to commit") && out.contains("0 signature(s)"),
        "{out}"
    );
    assert_eq!(f.env.head(), before);

    // Revocation: the CRL lists it, openssl says "certificate revoked".
    let revoked = f.revoke_old_laptop();
    if have("openssl") {
        let e = &f.env;
        let (ok, out) = openssl_verify(
            &e.path("ca/root-ca.pem"),
            Some(&e.path("ca/issuing-ca.pem")),
            &e.path("crl/example-ca.crl.pem"),
            &revoked,
        );
        assert!(
            !ok && out.contains("certificate revoked"),
            "expected a revoked certificate: {out}"
        );
    }
    f.verify_all();
    f.pkilint_all();
    let idx = f.env.index("example-ca");
    assert_eq!(idx["crl"]["number"], 2);
    assert_eq!(idx["crl"]["serials"].as_array().unwrap().len(), 1);

    // The request named by the revocation gets no new certificate.
    let (plan, _) = f.env.plan_json(&[]);
    let laptop = plan_request(&plan, "requests/clients/old-laptop.yaml");
    assert_eq!(laptop["action"], "revoked");
}

/// The example repository with `n` more server requests in `requests/servers/batch/`
/// (`rNN.yaml`, each naming `rNN.internal.example.com`), committed, its CA made (P-256).
fn example_with_batch(n: usize) -> Env {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&["--key-algorithm", "p256"]);
    let dir = env.path("requests/servers/batch");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 0..n {
        let name = format!("r{n:02}.internal.example.com");
        new_p256_csr(&dir.join(format!("r{n:02}.csr.pem")), &name);
        std::fs::write(
            dir.join(format!("r{n:02}.yaml")),
            format!("csr: r{n:02}.csr.pem\nusages: [server_auth]\nsans: {{dns: [{name}]}}\n"),
        )
        .unwrap();
    }
    env.commit_all("a batch");
    env
}

/// A batch big enough that gitca checks its own signatures by tables of the CA key's multiples
/// (domain/fixed_key.rs; from 64 signatures): every certificate verifies with openssl and
/// x509-parser, and `gitca verify`, which checks them by AWS-LC's general verify, agrees.
#[test]
fn a_batch_checked_by_the_ca_keys_tables_verifies_everywhere() {
    const BATCH: usize = 70;
    let env = example_with_batch(BATCH);
    let o = env
        .command_in(&env.repo, &["apply"])
        .env("RUST_LOG", "gitca=debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // The example's one request that policy rejects.
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("checked by tables of the CA key's multiples"),
        "{err}"
    );
    let f = Flow { env };
    assert!(f.verify_all() >= BATCH + 6);
    f.env.ok(&["verify"], 0);
}

/// Defect (38525e6, found by a review): in an outputs commit of 100 or more new files (one
/// pack), a deleted output shifted every later file onto the next file's blob: `apply` exited
/// 0 with certificates at other requests' paths and the last one deleted. Here a request is
/// removed while every other one of the batch is reissued (a name added): each certificate
/// is at its own request's path, and `gitca verify` agrees.
#[test]
fn a_removed_request_among_many_reissued_leaves_each_certificate_at_its_path() {
    const BATCH: usize = 60;
    let env = example_with_batch(BATCH);
    env.ok(&["apply"], 3);
    let batch = env.path("requests/servers/batch");
    std::fs::remove_file(batch.join("r00.yaml")).unwrap();
    std::fs::remove_file(batch.join("r00.csr.pem")).unwrap();
    for n in 1..BATCH {
        env.edit(&format!("requests/servers/batch/r{n:02}.yaml"), |y| {
            y.replace("]}", &format!(", r{n:02}b.internal.example.com]}}"))
        });
    }
    env.commit_all("r00 removed, the others reissued");
    env.ok(&["apply"], 3);
    assert!(!env.path("issued/servers/batch/r00.pem").exists());
    for n in 1..BATCH {
        let pem = env.read(&format!("issued/servers/batch/r{n:02}.pem"));
        let cert = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1;
        let cert = cert.parse_x509().unwrap();
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            sans.contains(&format!("r{n:02}b.internal.example.com")),
            "r{n:02}: {sans}"
        );
        assert!(
            !sans.contains(&format!("r{:02}b.", n + 1)),
            "r{n:02}: {sans}"
        );
    }
    assert_eq!(env.git(&["status", "--porcelain"]), "");
    env.ok(&["verify"], 0);
}

#[test]
fn example_repo_p384_ca() {
    let f = Flow::new("p384");
    f.verify_all();
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(f.env.path("issued/servers/web-01.pem"))
        .output();
    if let Ok(o) = text {
        assert!(String::from_utf8_lossy(&o.stdout).contains("ecdsa-with-SHA384"));
    }
}

#[test]
fn example_repo_rsa_ca_verifies_and_lints() {
    let f = Flow::new("rsa2048");
    f.verify_all();
    f.pkilint_all();
    let saved = f.revoke_old_laptop();
    if have("openssl") {
        let e = &f.env;
        let (ok, out) = openssl_verify(
            &e.path("ca/root-ca.pem"),
            Some(&e.path("ca/issuing-ca.pem")),
            &e.path("crl/example-ca.crl.pem"),
            &saved,
        );
        assert!(!ok && out.contains("certificate revoked"), "{out}");
    }
}

#[test]
fn single_ca_crl_and_certificates_verify() {
    let env = Env::from(&format!("{FIXTURES}/defect-repo"), &["revocations.yaml"]);
    env.init(&["--single"]);
    env.ok(&["apply"], 3);
    let leaves = leaf_files(&env.path("issued"));
    // The nine good-* requests and key-reuse-a.
    assert_eq!(leaves.len(), 10, "{leaves:?}");
    for l in &leaves {
        rust_verify(&env.path("ca/ca.pem"), l);
        if have("openssl") {
            let (ok, out) = openssl_verify(
                &env.path("ca/ca.pem"),
                None,
                &env.path("crl/defect-ca.crl.pem"),
                l,
            );
            assert!(ok, "{}: {out}", l.display());
        }
    }
}

#[test]
fn renewal_and_crl_refresh_follow_the_clock() {
    let f = Flow::new("p256");
    let e = &f.env;
    let idx = e.index("example-ca");
    let web = idx["certs"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, c)| c["request_id"] == "requests/servers/web-01.yaml")
        .unwrap();
    let not_after = time::OffsetDateTime::parse(
        web.1["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // Five days before expiry: inside the 10-day renew_before window.
    let at = (not_after - time::Duration::days(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (plan, _) = e.plan_json(&["--at", &at]);
    let web_plan = plan_request(&plan, "requests/servers/web-01.yaml");
    assert_eq!(web_plan["action"], "renew");
    assert!(
        plan["crl_due"].is_string(),
        "the CRL's nextUpdate has passed by then"
    );
    let out = e.ok(&["apply", "--now", &at], 3);
    assert!(out.contains("renew"), "{out}");
    // The new certificate replaces the old in the repo; the old one is not revoked.
    let idx = e.index("example-ca");
    let web_certs: Vec<_> = idx["certs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["request_id"] == "requests/servers/web-01.yaml")
        .collect();
    assert_eq!(web_certs.len(), 2);
    assert!(web_certs.iter().all(|c| c["revoked"].is_null()));
    assert!(idx["crl"]["number"].as_u64().unwrap() >= 2);
}

#[test]
fn crl_command_resigns_only_when_due() {
    let f = Flow::new("p256");
    let e = &f.env;
    let out = e.ok(&["crl"], 0);
    assert!(out.contains("current"), "{out}");
    let idx = e.index("example-ca");
    let next = time::OffsetDateTime::parse(
        idx["crl"]["next_update"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let at = (next - time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let out = e.ok(&["crl", "--now", &at], 0);
    assert!(out.contains("CRL number 2"), "{out}");
    assert!(e.git(&["log", "-1", "--format=%B"]).contains("CRL 2"));
}

/// `verify` compares every published certificate with its record in the state: one stored as
/// DER instead of PEM, and one signed again with the CA key (same serial, another validity), are
/// reported as hand-edited, each in the file's place among the findings (before its chain's);
/// one signed by another key under the CA's name is not from the CA.
#[test]
fn verify_reports_certificates_that_differ_from_the_state_in_place() {
    if !have("openssl") {
        return;
    }
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    // Before the first apply there is no bundle yet, and nothing to report.
    env.ok(&["verify"], 0);
    env.ok(&["apply"], 3);
    let leaves = leaf_files(&env.path("issued"));
    let rel = |p: &Path| {
        p.strip_prefix(env.path(""))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let (a, b) = (&leaves[0], &leaves[1]);
    for leaf in [a, b] {
        std::fs::write(leaf, pem_der(leaf)).unwrap();
    }
    let chain_of_b = b.with_extension("chain.pem");
    std::fs::remove_file(&chain_of_b).unwrap();
    let openssl = |args: &[&str]| tool_in("openssl", &env.path(""), args);
    let text = |p: &Path| p.to_string_lossy().into_owned();
    // Replaces a leaf with a certificate for the same public key, signed by `ca` and `ca_key`.
    let resign = |leaf: &Path, subject: &str, ca: &Path, ca_key: &Path, more: &[&str]| {
        let (key, resigned) = (env.path("subject-key.pem"), env.path("resigned.pem"));
        std::fs::write(
            &key,
            openssl(&["x509", "-noout", "-pubkey", "-in", &text(leaf)]),
        )
        .unwrap();
        let (key_arg, ca, ca_key, out) = (text(&key), text(ca), text(ca_key), text(&resigned));
        let mut args = vec!["x509", "-new", "-subj", subject, "-force_pubkey", &key_arg];
        args.extend(["-CA", &ca, "-CAkey", &ca_key, "-days", "5", "-out", &out]);
        args.extend(more);
        openssl(&args);
        std::fs::rename(&resigned, leaf).unwrap();
        std::fs::remove_file(&key).unwrap();
    };
    // Re-signed by the CA key itself: a valid signature over bytes the state never signed.
    let c = &leaves[2];
    let serial = format!("0x{}", openssl_serial(c));
    resign(
        c,
        "/CN=edited",
        &env.path("ca/issuing-ca.pem"),
        &env.data.join("example-ca/issuing-ca.key"),
        // Another digest than the CA's own: a verifier reused across algorithms would fail it.
        &["-set_serial", &serial, "-sha384"],
    );
    // Signed by another key under the CA's own name: the signature check, not the issuer
    // name, finds it.
    let d = &leaves[3];
    let impostor = (env.path("impostor.key"), env.path("impostor.pem"));
    let ca_subject = openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-nameopt",
        "compat",
        "-in",
        &text(&env.path("ca/issuing-ca.pem")),
    ]);
    let ca_subject = ca_subject.trim().trim_start_matches("subject=");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        ca_subject,
        "-keyout",
        &text(&impostor.0),
        "-out",
        &text(&impostor.1),
    ]);
    resign(d, "/CN=impostor", &impostor.1, &impostor.0, &[]);
    for f in [&impostor.0, &impostor.1] {
        std::fs::remove_file(f).unwrap();
    }
    // A chain cut to its leaf, a bundle and a CRL PEM replaced: each was unseen before.
    let chain_of_a = a.with_extension("chain.pem");
    let full_chain = std::fs::read_to_string(&chain_of_a).unwrap();
    let end = "-----END CERTIFICATE-----\n";
    let leaf_only = &full_chain[..full_chain.find(end).unwrap() + end.len()];
    std::fs::write(&chain_of_a, leaf_only).unwrap();
    let crl_pem = env.path("crl/example-ca.crl.pem");
    assert!(crl_pem.exists());
    let bundle = env.path("ca/bundle.pem");
    std::fs::copy(a, &crl_pem).unwrap();
    env.commit_all("hand-edited certificates");
    let o = env.gitca(&["verify", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2), "findings are changes");
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<(String, String)> = findings
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().into(),
                f["file"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut want = vec![
        ("cert-hand-edited".to_string(), rel(a)),
        ("chain-mismatch".to_string(), rel(&chain_of_a)),
        ("cert-hand-edited".to_string(), rel(b)),
        ("chain-mismatch".to_string(), rel(&chain_of_b)),
        ("cert-hand-edited".to_string(), rel(c)),
        (
            "chain-mismatch".to_string(),
            rel(&c.with_extension("chain.pem")),
        ),
        // In its place the CA's certificate is missing.
        ("cert-not-from-ca".to_string(), rel(d)),
        ("cert-missing-in-repo".to_string(), rel(d)),
        ("crl-pem-mismatch".to_string(), rel(&crl_pem)),
    ];
    assert_eq!(got, want, "{findings:#?}");

    // A bundle other than the CA certificates is one finding, which stands for every chain
    // file's CA part too (as after a CA certificate renewed and not yet applied).
    std::fs::copy(env.path("ca/issuing-ca.pem"), &bundle).unwrap();
    env.commit_all("a hand-edited bundle");
    let o = env.gitca(&["verify", "--format", "json"]);
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<(String, String)> = (findings.iter())
        .map(|f| {
            (
                f["code"].as_str().unwrap().into(),
                f["file"].as_str().unwrap().into(),
            )
        })
        .collect();
    want.retain(|w| *w != ("chain-mismatch".to_string(), rel(&chain_of_a)));
    want.insert(0, ("bundle-mismatch".to_string(), rel(&bundle)));
    assert_eq!(got, want, "{findings:#?}");
}

/// A published certificate file that no longer parses is reported by `verify`, and the next
/// apply says so and writes it again from the state.
#[test]
fn an_unparsable_leaf_is_reported_and_written_again_from_the_state() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let leaf = leaf_files(&env.path("issued")).remove(0);
    let rel = leaf
        .strip_prefix(env.path(""))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let good = std::fs::read(&leaf).unwrap();
    std::fs::write(
        &leaf,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    env.commit_all("a broken certificate file");

    let o = env.gitca(&["verify", "--format", "json"]);
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["code"] == "cert-unparsable" && f["file"] == rel.as_str()),
        "{findings:#?}"
    );

    let o = env.gitca(&["apply", "--full-scan"]);
    // 3: the example's rejected requests, as on the first apply.
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{rel}: not a certificate"))
            && err.contains("writing it again from the state"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&leaf).unwrap(),
        good,
        "the state's certificate"
    );
    env.ok(&["verify"], 0);
}
