//! Plan actions and exit codes over a request's life: issue, reissue, orphan, lifetime limits,
//! a CA repository in a subfolder, and a signer key that does not match the CA certificate.

mod common;
use common::*;

fn action<'a>(plan: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    &plan_request(plan, id)["action"]
}

/// The example without its rejected request: exit codes 2 (pending), 0 (done), 0 (nothing to do).
#[test]
fn exit_codes_follow_terraform_detailed_exitcode() {
    let env = Env::from(
        EXAMPLE,
        &[
            "revocations.yaml",
            "requests/servers/rejected-outside-domain.yaml",
        ],
    );
    env.init(&[]);
    let (_, code) = env.plan_json(&[]);
    assert_eq!(code, 2, "changes pending");
    env.ok(&["apply"], 0);
    let (plan, code) = env.plan_json(&[]);
    assert_eq!(code, 0, "nothing to do: {plan}");
    let o = env.gitca(&["plan", "--rev", "no-such-rev"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-rev"));
    // Defect `usage-error-exits-2`: clap's exit code for a mistyped flag, 2, read as
    // "changes pending" (plan), an alert (status) or findings (verify).
    for args in [
        &["plan", "--formt", "json"][..],
        &["plan", "--format", "yaml"],
        &["status", "--expiring-within", "30"],
        &["verify", "--bogus"],
        &["no-such-command"],
    ] {
        let o = env.gitca(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?}: says why");
    }
    for args in [&["--help"][..], &["plan", "--help"], &["--version"]] {
        let o = env.gitca(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn changed_request_is_reissued_and_removed_request_is_orphaned() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let y = env.read("requests/servers/api.yaml");
    env.edit("requests/servers/api.yaml", |y| {
        y.replace("lifetime: 90d", "lifetime: 60d")
    });
    assert_ne!(
        env.read("requests/servers/api.yaml"),
        y,
        "fixture has a lifetime to change"
    );
    std::fs::remove_file(env.path("requests/clients/ci-runner.yaml")).unwrap();
    env.commit_all("change api, remove ci-runner");
    let (plan, _) = env.plan_json(&[]);
    assert_eq!(action(&plan, "requests/servers/api.yaml"), "reissue");
    let orphans = plan["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0]["request_id"], "requests/clients/ci-runner.yaml");
    assert_eq!(orphans[0]["revoke"], false);
    env.ok(&["apply"], 3);
    assert!(
        !env.path("issued/clients/ci-runner.pem").exists(),
        "outputs of a removed request are removed"
    );
    let idx = env.index("example-ca");
    assert!(
        idx["certs"]
            .as_object()
            .unwrap()
            .values()
            .all(|c| c["revoked"].is_null()),
        "orphans are not revoked by default"
    );

    // With orphans.revoke, the orphan is revoked (cessation of operation) and listed on the CRL.
    env.edit("gitca.yaml", |cfg| {
        cfg.replace("revoke: false", "revoke: true")
    });
    env.commit_all("revoke orphans");
    let (plan, _) = env.plan_json(&[]);
    assert_eq!(plan["orphans"][0]["revoke"], true);
    env.ok(&["apply"], 3);
    let idx = env.index("example-ca");
    assert_eq!(idx["crl"]["serials"].as_array().unwrap().len(), 1);
    let revoked: Vec<_> = idx["certs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| !c["revoked"].is_null())
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["request_id"], "requests/clients/ci-runner.yaml");
    assert_eq!(revoked[0]["revoked"]["reason"], "cessation_of_operation");
}

/// A certificate may not outlive its CA: a rejection, never a silent truncation.
#[test]
fn lifetime_beyond_the_ca_is_rejected() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&["--issuing-lifetime", "20d"]);
    let (plan, _) = env.plan_json(&[]);
    let api = plan_request(&plan, "requests/servers/api.yaml");
    assert_eq!(api["action"], "rejected");
    assert!(
        api["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "lifetime-beyond-ca"),
        "{api}"
    );
    // The 1-day SPIFFE certificate still fits.
    assert_eq!(
        action(&plan, "requests/workloads/payments-api.yaml"),
        "issue"
    );
}

#[test]
fn ca_repository_in_a_subfolder() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.move_ca_into("pki");
    env.ok(&["--dir", "pki", "init"], 0);
    env.ok(&["--dir", "pki", "apply"], 3);
    assert!(env.path("pki/issued/servers/web-01.pem").exists());
    assert!(env.path("pki/crl/example-ca.crl").exists());
    assert!(!env.path("issued").exists());
    if have("openssl") {
        let (ok, out) = openssl_verify(
            &env.path("pki/ca/root-ca.pem"),
            Some(&env.path("pki/ca/issuing-ca.pem")),
            &env.path("pki/crl/example-ca.crl.pem"),
            &env.path("pki/issued/servers/web-01.pem"),
        );
        assert!(ok, "{out}");
    }
    // --repo from elsewhere works the same.
    let o = env.gitca_in(
        env.tmp(),
        &["--repo", env.repo.to_str().unwrap(), "--dir", "pki", "plan"],
    );
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn a_signer_key_that_does_not_match_the_ca_is_refused() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    // Put the root key where the issuing key belongs.
    let dir = env.data.join("example-ca");
    std::fs::copy(dir.join("root-ca.key"), dir.join("issuing-ca.key")).unwrap();
    let head = env.head();
    let o = env.gitca(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not match the CA certificate ca/issuing-ca.pem"),
        "{err}"
    );
    assert_eq!(env.head(), head);
    assert!(
        !env.state("example-ca").join("index.json").exists(),
        "nothing written"
    );

    // A missing key is a clear error too.
    std::fs::remove_file(dir.join("issuing-ca.key")).unwrap();
    let o = env.gitca(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("issuing-ca.key"));
}

#[test]
fn keys_are_private_and_outside_the_repository() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    use std::os::unix::fs::PermissionsExt;
    for k in ["root-ca.key", "issuing-ca.key"] {
        let m = std::fs::metadata(env.data.join("example-ca").join(k))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600, "{k}");
    }
    let tracked = env.git(&["ls-files"]);
    assert!(!tracked.contains(".key"));
    let all = env.git(&["log", "--all", "-p"]);
    assert!(!all.contains("PRIVATE KEY"), "no private key in any commit");
    // A second init refuses to overwrite the CA.
    let o = env.gitca(&["init"]);
    assert_eq!(o.status.code(), Some(1));
}

/// Found by the review of the date check: an entry dated ahead (or before 1970) that an
/// earlier gitca published would be rejected on every run from then on, and append-only, it
/// could never be mended. A published entry keeps its date; a new one is rejected.
#[test]
fn a_published_entry_dated_ahead_stays_as_published() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let (serial, _) = newest_of(&env, "requests/servers/web-01.yaml");
    let now = time::OffsetDateTime::now_utc();
    let ahead = rfc3339(
        (now + time::Duration::days(2))
            .replace_nanosecond(0)
            .unwrap(),
    );
    std::fs::write(
        env.path("revocations.yaml"),
        format!(
            "revocations:\n  - serial: \"{serial}\"\n    reason: superseded\n    date: {ahead}\n"
        ),
    )
    .unwrap();
    env.commit_all("dated ahead");
    let (plan, _) = env.plan_json(&[]);
    assert_eq!(plan["revocations"][0]["action"], "rejected", "{plan}");
    // Published by a run whose clock is past that date, as an earlier gitca did at any time.
    let later = rfc3339(now + time::Duration::days(3));
    env.ok(&["apply", "--now", &later], 3);
    let (plan, _) = env.plan_json(&[]);
    assert_eq!(
        plan["revocations"][0]["action"], "already_revoked",
        "{plan}"
    );
}

/// Defect `crl-signed-after-the-ca-expired` (found by review): `gitca crl` after the issuing
/// CA's notAfter signed a CRL no relying party takes. It refuses, saying a new CA is due.
#[test]
fn no_crl_is_signed_after_the_ca_expired() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let o = env.gitca(&["crl", "--force", "--now", "2099-01-01T00:00:00Z"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ca/issuing-ca.pem expired"), "{err}");
    let idx = env.index("example-ca");
    assert_eq!(idx["crl"]["number"], 1, "nothing signed");
    assert_eq!(idx["crl_number"], 1, "no number reserved");
}

/// Defects found in `init`: `init-replaces-unreadable-config` (a gitca.yaml that is not UTF-8
/// was replaced by the defaults and committed: another CA name, no CRL or AIA URL, and a KMS
/// signer or S3 state would have become local ones), `init-replaces-committed-root` (a
/// committed root certificate was replaced by a new root), `init-chmods-existing-folder`
/// (the key's folder was made 0700 even when it existed, a home folder say).
#[test]
fn init_refuses_to_replace_what_is_committed_and_leaves_existing_folders_alone() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let mut latin1 = std::fs::read(env.path("gitca.yaml")).unwrap();
    latin1.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(env.path("gitca.yaml"), &latin1).unwrap();
    env.commit_all("a comment in Latin-1");
    let o = env.gitca(&["init"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("gitca.yaml") && err.contains("UTF-8"), "{err}");
    assert_eq!(std::fs::read(env.path("gitca.yaml")).unwrap(), latin1);
    assert!(!env.data.join("example-ca").exists(), "no key made");

    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    std::fs::create_dir_all(env.path("ca")).unwrap();
    std::fs::write(env.path("ca/root-ca.pem"), "the root we have\n").unwrap();
    env.commit_all("the existing root");
    let o = env.gitca(&["init"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ca/root-ca.pem"), "{err}");
    assert_eq!(env.read("ca/root-ca.pem"), "the root we have\n");

    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let folder = env.data.join("example-ca");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.init(&[]);
    let mode = std::fs::metadata(&folder).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "an existing folder keeps its mode");
    let key = std::fs::metadata(folder.join("issuing-ca.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);

    // Defect `init-leaves-keys-behind`: a commit init could not make (an untracked file where
    // a CA certificate goes) left both keys, and every later init refused them.
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    std::fs::create_dir_all(env.path("ca")).unwrap();
    std::fs::write(env.path("ca/root-ca.pem"), "mine, not committed\n").unwrap();
    let o = env.gitca(&["init"]);
    assert_eq!(o.status.code(), Some(1));
    let folder = env.data.join("example-ca");
    for k in ["root-ca.key", "issuing-ca.key"] {
        assert!(!folder.join(k).exists(), "{k} left behind");
    }
    std::fs::remove_file(env.path("ca/root-ca.pem")).unwrap();
    env.init(&[]);
    // And a key there already: refused before the other is written.
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let folder = env.data.join("example-ca");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("issuing-ca.key"), "an old key\n").unwrap();
    let o = env.gitca(&["init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("issuing-ca.key"));
    assert!(!folder.join("root-ca.key").exists(), "no root key written");
}

/// Found by the review of the git adapter: a folder of requests linked into `requests/` (a
/// symbolic link, a submodule) was passed over without a word; the plan warns, naming it.
#[cfg(unix)]
#[test]
fn a_linked_folder_of_requests_is_named_in_the_plan() {
    let env = Env::from(EXAMPLE, &[]);
    std::os::unix::fs::symlink("../servers", env.path("requests/clients/more")).unwrap();
    env.commit_all("a linked folder");
    env.init(&[]);
    let (plan, _) = env.plan_json(&[]);
    let warned = (plan["warnings"].as_array().into_iter().flatten())
        .any(|w| w["code"] == "request-not-regular-file" && w["file"] == "requests/clients/more");
    assert!(warned, "{}", plan["warnings"]);
    let md = env.ok(&["plan", "--format", "markdown"], 3);
    assert!(md.contains("requests/clients/more"), "{md}");
}

/// Run from a folder of the repository, gitca said only "not a git repository"; it names the
/// repository it is in and how to run there (it does not take it: a CA may be a folder of it).
#[test]
fn run_from_a_subfolder_names_the_repository() {
    let env = Env::from(EXAMPLE, &[]);
    let o = env.gitca_in(&env.path("requests"), &["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not the top of a git repository"), "{err}");
    let root = env.repo.canonicalize().unwrap();
    assert!(err.contains(&format!("--repo {}", root.display())), "{err}");
}

#[test]
fn every_command_has_help() {
    let env = Env::from(EXAMPLE, &[]);
    for c in ["init", "plan", "apply", "crl"] {
        let out = env.ok(&[c, "--help"], 0);
        assert!(out.contains("Usage"), "{c}: {out}");
    }
}

/// Revocations by serial, as openssl prints it (hex) and as decimal, in a revocations/ folder.
#[test]
fn revoke_by_hex_and_decimal_serial_from_a_revocations_folder() {
    if !have("openssl") {
        return;
    }
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let api = openssl_serial(&env.path("issued/servers/api.pem"));
    let web = openssl_serial(&env.path("issued/servers/web-01.pem"));
    // openssl prints hex; write one with colons, one converted to decimal.
    let colons: String = api
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let decimal = {
        // Base conversion of the hex serial to decimal digits.
        let mut digits: Vec<u32> = vec![0];
        for c in web.chars() {
            let mut carry = c.to_digit(16).unwrap();
            for d in digits.iter_mut().rev() {
                let v = *d * 16 + carry;
                *d = v % 10;
                carry = v / 10;
            }
            while carry > 0 {
                digits.insert(0, carry % 10);
                carry /= 10;
            }
        }
        digits
            .iter()
            .map(|d| char::from_digit(*d, 10).unwrap())
            .collect::<String>()
    };
    std::fs::create_dir_all(env.path("revocations")).unwrap();
    std::fs::write(
        env.path("revocations/2026-11.yaml"),
        format!("revocations:\n  - serial: \"{colons}\"\n    reason: key_compromise\n  - serial: \"{decimal}\"\n    reason: affiliation_changed\n    date: 2026-11-01T00:00:00Z\n"),
    )
    .unwrap();
    let saved = env.tmp().join("api.pem");
    std::fs::copy(env.path("issued/servers/api.pem"), &saved).unwrap();
    env.commit_all("revoke two serials");
    let (plan, _) = env.plan_json(&[]);
    let revs = plan["revocations"].as_array().unwrap();
    assert_eq!(revs.len(), 2, "{plan}");
    assert!(
        revs.iter()
            .all(|r| r["action"] == "revoke" && r["serials"].as_array().unwrap().len() == 1),
        "{plan}"
    );
    env.ok(&["apply"], 3);
    let text = openssl_text("crl", &env.path("crl/example-ca.crl.pem")).to_uppercase();
    assert!(
        text.contains(&api.to_uppercase()) && text.contains(&web.to_uppercase()),
        "{text}"
    );
    assert!(
        text.contains("KEY COMPROMISE") && text.contains("AFFILIATION CHANGED"),
        "{text}"
    );
    assert!(
        text.contains("NOV  1 00:00:00 2026"),
        "the written date is used: {text}"
    );
    let (ok, out) = openssl_verify(
        &env.path("ca/root-ca.pem"),
        Some(&env.path("ca/issuing-ca.pem")),
        &env.path("crl/example-ca.crl.pem"),
        &saved,
    );
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    // A revoked certificate's request gets no new one until the request changes...
    let (plan, _) = env.plan_json(&[]);
    assert_eq!(action(&plan, "requests/servers/api.yaml"), "revoked");
    assert_eq!(action(&plan, "requests/servers/web-01.yaml"), "revoked");
    let revs = plan["revocations"].as_array().unwrap();
    assert!(
        revs.iter().all(|r| r["action"] == "already_revoked"),
        "{plan}"
    );
    // ...and a key revoked for key compromise is never certified again.
    for r in ["requests/servers/api.yaml", "requests/servers/web-01.yaml"] {
        let y = env.read(r);
        std::fs::write(env.path(r), format!("{y}\n# new certificate please\n")).unwrap();
    }
    env.commit_all("ask again");
    let (plan, _) = env.plan_json(&[]);
    let api = plan_request(&plan, "requests/servers/api.yaml");
    assert_eq!(api["findings"][0]["code"], "key-compromised", "{api}");
    assert_eq!(
        action(&plan, "requests/servers/web-01.yaml"),
        "issue",
        "affiliation changed: the key may be reused"
    );
}

/// A custom extension the policy allows is carried into the certificate as given.
#[test]
fn allowed_custom_extension_is_issued() {
    let env = Env::from(
        &format!("{FIXTURES}/defect-repo"),
        &["expected.yaml", "README.md", "revocations.yaml"],
    );
    let policy = env.read("policies/default.yaml");
    let patched = policy.replace(
        "extension_oids: []",
        "extension_oids: [\"1.3.6.1.4.1.55555.9\"]",
    );
    assert_ne!(patched, policy, "the fixture policy lists extension_oids");
    std::fs::write(env.path("policies/default.yaml"), patched).unwrap();
    env.commit_all("allow a custom extension");
    env.init(&["--single"]);
    let (plan, _) = env.plan_json(&[]);
    assert_eq!(
        action(&plan, "requests/extension-not-allowed.yaml"),
        "issue",
        "{plan}"
    );
    env.ok(&["apply"], 3);
    if have("openssl") {
        let text = openssl_text("x509", &env.path("issued/extension-not-allowed.pem"));
        assert!(text.contains("1.3.6.1.4.1.55555.9"), "{text}");
    }
}

/// status: inventory as table, JSON and CSV; --expiring-within alerts (exit 2) for cron.
#[test]
fn status_inventory_and_expiry_alert() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--format", "json"], 0)).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(
        rows.len(),
        6,
        "six issued (old-laptop is blocked by its revocation)"
    );
    let web = rows
        .iter()
        .find(|r| r["request"] == "requests/servers/web-01.yaml")
        .unwrap();
    assert_eq!(web["state"], "valid");
    // Found by review: a fixed 30-day window called every new 30-day certificate expiring;
    // without --expiring-within it is the renewal window (10 days here).
    let db = (rows.iter())
        .find(|r| r["request"] == "requests/servers/db-01.yaml")
        .unwrap();
    assert!(db["days_left"].as_i64().unwrap() >= 29, "{db}");
    assert_eq!(db["state"], "valid", "{db}");
    assert!(
        web["sans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "web-01.internal.example.com")
    );
    assert!(
        web["subject"]
            .as_str()
            .unwrap()
            .contains("CN=web-01.internal.example.com")
    );
    let csv = env.ok(&["status", "--format", "csv"], 0);
    assert!(
        csv.starts_with(
            "request,serial,subject,sans,not_before,not_after,days_left,state,current\n"
        )
    );
    assert_eq!(csv.lines().count(), 7);
    assert!(env.ok(&["status"], 0).contains("requests/servers/api.yaml"));
    // The 1-day SPIFFE certificate is inside a 2-day window; nothing is inside a 1-hour window.
    let o = env.gitca(&["status", "--expiring-within", "2d"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    env.ok(&["status", "--expiring-within", "1h"], 0);

    // Found by review: against an empty state (a mistyped data folder) the alert failed open,
    // an empty table and exit 0.
    let o = env
        .command_in(&env.repo, &["status", "--expiring-within", "2d"])
        .env("GITCA_DATA_DIR", env.tmp().join("elsewhere"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("holds no certificates"), "{err}");
}

/// verify: a clean repository has no findings; tampering, a missing file and a stale CRL do.
#[test]
fn verify_audits_the_repository_against_the_ca_and_the_state() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let out = env.ok(&["verify"], 0);
    assert!(out.contains("0 finding(s)"), "{out}");

    // A hand-edited certificate (another valid certificate in its place) and a removed one.
    std::fs::copy(
        env.path("issued/servers/db-01.pem"),
        env.path("issued/servers/api.pem"),
    )
    .unwrap();
    std::fs::remove_file(env.path("issued/clients/alice.pem")).unwrap();
    env.commit_all("tamper");
    let o = env.gitca(&["verify", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    let findings: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let codes: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"cert-wrong-path"), "{findings}");
    assert!(codes.contains(&"cert-missing-in-repo"), "{findings}");
    env.git(&["reset", "-q", "--hard", "HEAD~1"]);

    // Found by review: only `.pem` files were checked, so a certificate committed as `.crt`
    // (a revoked one, another CA's) passed, though a web server serves it all the same.
    std::fs::copy(
        env.path("issued/servers/db-01.pem"),
        env.path("issued/servers/db-01-old.crt"),
    )
    .unwrap();
    std::fs::write(env.path("issued/servers/notes.pem"), "not a certificate\n").unwrap();
    std::fs::write(env.path("issued/README.md"), "Written by gitca.\n").unwrap();
    // The second review: a full chain (two certificates) under any name other than `.pem`
    // passed, and so did a chain file whose leaf is gone (the file a server is given).
    std::fs::copy(
        env.path("issued/clients/alice.chain.pem"),
        env.path("issued/clients/alice-full.crt"),
    )
    .unwrap();
    std::fs::remove_file(env.path("issued/servers/api.pem")).unwrap();
    // The read of this change: a certificate with its private key appended passed.
    let with_key = format!(
        "{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        env.read("issued/clients/ci-runner.pem")
    );
    std::fs::write(env.path("issued/clients/ci-runner-full.crt"), with_key).unwrap();
    // A DER copy of a leaf at its own path: the certificate of the state, not as written.
    tool_in(
        "openssl",
        &env.path("issued/workloads"),
        &[
            "x509",
            "-in",
            "payments-api.pem",
            "-outform",
            "DER",
            "-out",
            "der",
        ],
    );
    std::fs::rename(
        env.path("issued/workloads/der"),
        env.path("issued/workloads/payments-api.pem"),
    )
    .unwrap();
    env.commit_all("files gitca did not write");
    let o = env.gitca(&["verify", "--format", "json"]);
    assert_eq!(o.status.code(), Some(2));
    let findings: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let at = |code: &str, path: &str| {
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == code && f["file"] == path)
    };
    assert!(
        at("cert-wrong-path", "issued/servers/db-01-old.crt"),
        "{findings}"
    );
    assert!(
        at("cert-unparsable", "issued/servers/notes.pem"),
        "{findings}"
    );
    assert!(
        at("cert-wrong-path", "issued/clients/alice-full.crt"),
        "{findings}"
    );
    assert!(
        at("cert-wrong-path", "issued/servers/api.chain.pem"),
        "{findings}"
    );
    assert!(
        at("cert-unparsable", "issued/clients/ci-runner-full.crt"),
        "{findings}"
    );
    assert!(
        at("cert-missing-in-repo", "issued/servers/api.pem"),
        "{findings}"
    );
    let der = (findings.as_array().unwrap().iter())
        .find(|f| f["file"] == "issued/workloads/payments-api.pem")
        .expect("the DER leaf is a finding");
    assert_eq!(der["code"], "cert-hand-edited", "{findings}");
    assert!(
        der["message"]
            .as_str()
            .unwrap()
            .contains("not as gitca writes it"),
        "{der}"
    );
    assert!(
        !findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "issued/README.md"),
        "{findings}"
    );
    env.git(&["reset", "-q", "--hard", "HEAD~1"]);

    // Found by review: a CRL signed on a clock ahead passed, which openssl refuses as "CRL is
    // not yet valid" (so no revocation in it is checked).
    let ahead = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(2));
    env.ok(&["crl", "--force", "--now", &ahead], 0);
    assert_audit_finds(&env, "crl-not-yet-valid");

    // Found by review: a published revocation edited in place (its reason, here) passed the
    // audit, while the CRL keeps what was published (gitca plan refuses the commit).
    let published = std::fs::read_to_string(env.path("revocations.yaml")).unwrap();
    let edited = published.replace("reason: superseded", "reason: affiliation_changed");
    assert_ne!(edited, published, "the fixture names reason superseded");
    std::fs::write(env.path("revocations.yaml"), edited).unwrap();
    env.commit_all("edit a published revocation");
    assert_audit_finds(&env, "revocation-changed");
    env.git(&["reset", "-q", "--hard", "HEAD~1"]);

    // Found by review: a request whose CSR file was deleted was reported as "not in the
    // commit" (`cert-without-request`), its file still there.
    std::fs::remove_file(env.path("requests/servers/db-01.csr.pem")).unwrap();
    env.commit_all("lose a CSR");
    let o = env.gitca(&["verify", "--format", "json"]);
    let findings: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let of_db = |code: &str| {
        (findings.as_array().unwrap().iter()).any(|f| {
            f["code"] == code
                && f["file"] == "requests/servers/db-01.yaml"
                && f["message"].as_str().unwrap().contains("db-01.csr.pem")
        })
    };
    assert!(of_db("request-unreadable"), "{findings}");
    assert!(
        !(findings.as_array().unwrap().iter()).any(|f| f["code"] == "cert-without-request"),
        "{findings}"
    );
    env.git(&["reset", "-q", "--hard", "HEAD~1"]);

    // A revocation that disappeared from history (gitca plan refuses it too).
    std::fs::write(env.path("revocations.yaml"), "revocations: []\n").unwrap();
    env.commit_all("drop a revocation");
    assert_audit_finds(&env, "revocation-disappeared");
}

fn assert_audit_finds(env: &Env, code: &str) {
    let o = env.gitca(&["verify", "--format", "json"]);
    let findings: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == code),
        "{code} not in {findings}"
    );
}

#[test]
fn completions_and_man_page() {
    let env = Env::from(EXAMPLE, &[]);
    let bash = env.ok(&["completions", "bash"], 0);
    assert!(bash.contains("gitca") && bash.contains("apply"));
    let man = env.ok(&["man"], 0);
    assert!(
        man.contains(".TH gitca") && man.contains("plan"),
        "{}",
        &man[..200.min(man.len())]
    );
}

/// A policy change shows which existing certificates the new policy would no longer allow.
#[test]
fn policy_change_reports_certificates_no_longer_allowed() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let p = env.read("policies/internal-tls.yaml");
    let tightened = p.replace("max_lifetime: 90d", "max_lifetime: 45d");
    assert_ne!(tightened, p, "the example policy has a 90d maximum");
    std::fs::write(env.path("policies/internal-tls.yaml"), tightened).unwrap();
    env.commit_all("tighten internal-tls");
    let (plan, code) = env.plan_json(&["--no-state"]);
    assert_eq!(code, 3);
    let api = plan_request(&plan, "requests/servers/api.yaml");
    assert!(
        api["live_certificate_no_longer_allowed"].is_null(),
        "--no-state knows no certificates: {api}"
    );
    let (plan, _) = env.plan_json(&[]);
    let api = plan_request(&plan, "requests/servers/api.yaml");
    assert_eq!(api["action"], "rejected");
    assert_eq!(api["findings"][0]["code"], "lifetime-too-long");
    assert_eq!(api["live_certificate_no_longer_allowed"], true, "{api}");
    let md = env.ok(&["plan", "--format", "markdown"], 3);
    assert!(md.contains("no longer allowed"), "{md}");
}

/// Found by review: the pull-request plan runs without the state (`--no-state`), which knows no
/// issued serial, so every revocation by serial (and of a removed request) was rejected and the
/// required check blocked an emergency revocation. Such entries are "not checked" there, a
/// change pending, and apply checks them.
#[test]
fn a_plan_without_the_state_does_not_reject_revocations_it_cannot_check() {
    let env = Env::from(EXAMPLE, &EXAMPLE_ALL_ISSUED);
    env.init(&[]);
    env.ok(&["apply"], 0);
    let serial = openssl_serial(&env.path("issued/clients/alice.pem"));
    std::fs::remove_file(env.path("requests/clients/ci-runner.yaml")).unwrap();
    std::fs::write(
        env.path("revocations.yaml"),
        format!(
            "revocations:\n  - serial: \"{serial}\"\n    reason: key_compromise\n  \
             - request: requests/clients/ci-runner.yaml\n    reason: cessation_of_operation\n"
        ),
    )
    .unwrap();
    env.commit_all("revoke alice's key, retire ci-runner");
    let (plan, code) = env.plan_json(&["--no-state"]);
    assert_eq!(code, 2, "changes pending, none rejected: {plan}");
    let actions: Vec<&str> = (plan["revocations"].as_array().unwrap().iter())
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["unchecked", "unchecked"], "{plan}");
    let md = env.ok(&["plan", "--no-state", "--format", "markdown"], 2);
    assert!(
        md.contains("2 revocation(s) not checked (no state)"),
        "{md}"
    );
    assert!(md.contains("apply checks it"), "{md}");
    // With the state, both are checked and revoke.
    let (plan, code) = env.plan_json(&[]);
    assert_eq!(code, 2, "{plan}");
    let actions: Vec<&str> = (plan["revocations"].as_array().unwrap().iter())
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["revoke", "revoke"], "{plan}");
    // A serial this CA never issued is still rejected by the plan that knows.
    std::fs::write(
        env.path("revocations.yaml"),
        "revocations:\n  - serial: \"01:02:03\"\n    reason: superseded\n",
    )
    .unwrap();
    env.commit_all("a serial never issued");
    assert_eq!(env.plan_json(&["--no-state"]).1, 2);
    let (plan, code) = env.plan_json(&[]);
    assert_eq!(code, 3, "{plan}");
    assert_eq!(
        plan["revocations"][0]["findings"][0]["code"],
        "revocation-unknown-serial"
    );
}

/// `revoke_superseded: true`: the replaced certificate is revoked (superseded) once the new one
/// is issued; without it the old one runs until it expires.
#[test]
fn revoke_superseded_revokes_the_replaced_certificate() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let old = env.tmp().join("api-old.pem");
    std::fs::copy(env.path("issued/servers/api.pem"), &old).unwrap();
    env.edit("requests/servers/api.yaml", |y| {
        format!("{y}\nrevoke_superseded: true\n")
    });
    env.commit_all("api: revoke what a new certificate supersedes");
    let (plan, _) = env.plan_json(&[]);
    let api = plan_request(&plan, "requests/servers/api.yaml");
    assert_eq!(api["action"], "reissue");
    assert_eq!(api["supersede"].as_array().unwrap().len(), 1, "{api}");
    env.ok(&["apply"], 3);
    let idx = env.index("example-ca");
    let api_certs: Vec<_> = idx["certs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["request_id"] == "requests/servers/api.yaml")
        .collect();
    assert_eq!(api_certs.len(), 2);
    assert_eq!(
        api_certs
            .iter()
            .filter(|c| c["revoked"]["reason"] == "superseded")
            .count(),
        1
    );
    if have("openssl") {
        let (ok, out) = openssl_verify(
            &env.path("ca/root-ca.pem"),
            Some(&env.path("ca/issuing-ca.pem")),
            &env.path("crl/example-ca.crl.pem"),
            &old,
        );
        assert!(!ok && out.contains("certificate revoked"), "{out}");
        let (ok, out) = openssl_verify(
            &env.path("ca/root-ca.pem"),
            Some(&env.path("ca/issuing-ca.pem")),
            &env.path("crl/example-ca.crl.pem"),
            &env.path("issued/servers/api.pem"),
        );
        assert!(ok, "the new certificate is valid: {out}");
    }
    // Nothing more to do on the next run.
    let (plan, _) = env.plan_json(&[]);
    let api = plan_request(&plan, "requests/servers/api.yaml");
    assert_eq!(api["action"], "unchanged");
    assert!(api["supersede"].is_null(), "{api}");
}

/// `openssl KIND -noout -text` of the file at `path` (`x509` or `crl`).
fn openssl_text(kind: &str, path: &std::path::Path) -> String {
    let o = std::process::Command::new("openssl")
        .args([kind, "-noout", "-text", "-in"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The index entry of `request`'s newest certificate: its serial and notAfter.
fn newest_of(env: &Env, request: &str) -> (String, time::OffsetDateTime) {
    let idx = env.index("example-ca");
    let (serial, c) = idx["certs"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, c)| c["request_id"] == request)
        .max_by_key(|(_, c)| c["not_before"].as_str().unwrap().to_string())
        .unwrap();
    let not_after = time::OffsetDateTime::parse(
        c["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (serial.clone(), not_after)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Defect `compromised-key-renewed`: a key revoked for key compromise went on being certified
/// when the revoked certificate was not its request's newest (renewed from the same CSR), or
/// when the revocation came in the run that renewed it. And defect `key-compromise-not-raised`:
/// a key-compromise entry for certificates revoked already (superseded, say) was recorded and
/// changed nothing: the CRL kept the old reason and the key stayed usable.
#[test]
fn a_key_revoked_for_compromise_is_never_certified_again_and_its_reason_is_raised() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    // web-01, revoked as superseded by serial, then for key compromise by request.
    let web = "requests/servers/web-01.yaml";
    let (serial, _) = newest_of(&env, web);
    std::fs::create_dir_all(env.path("revocations")).unwrap();
    std::fs::write(
        env.path("revocations/b.yaml"),
        format!("revocations:\n  - serial: \"{serial}\"\n    reason: superseded\n"),
    )
    .unwrap();
    env.commit_all("web-01 superseded");
    env.ok(&["apply"], 3);
    std::fs::write(
        env.path("revocations/c.yaml"),
        format!("revocations:\n  - request: {web}\n    reason: key_compromise\n"),
    )
    .unwrap();
    env.commit_all("web-01's key was compromised after all");
    let (plan, _) = env.plan_json(&[]);
    let raise = (plan["revocations"].as_array().unwrap().iter())
        .find(|r| r["file"] == "revocations/c.yaml")
        .unwrap();
    assert_eq!(raise["action"], "revoke", "{plan}");
    // Its one certificate, revoked already, listed again to raise the reason: the CRL is
    // signed again though its serials do not change, and the plan says so as apply decides.
    assert_eq!(raise["serials"], serde_json::json!([serial]), "{plan}");
    assert!(
        plan["crl_due"]
            .as_str()
            .is_some_and(|r| r.contains("raises")),
        "{plan}"
    );
    env.ok(&["apply"], 3);
    let idx = env.index("example-ca");
    assert_eq!(idx["certs"][&serial]["revoked"]["reason"], "key_compromise");
    if have("openssl") {
        let text = openssl_text("crl", &env.path("crl/example-ca.crl.pem")).to_uppercase();
        let entry = text
            .split("SERIAL NUMBER: ")
            .find(|e| e.starts_with(&serial.to_uppercase()));
        assert!(
            entry.is_some_and(|e| e.contains("KEY COMPROMISE")),
            "{serial}: {text}"
        );
    }

    // Its current certificate revoked for key compromise: in the run that revokes it the
    // request is shown as revoked, as in the runs after, not rejected (which failed the plan
    // check of the pull request revoking it).
    let db = "requests/servers/db-01.yaml";
    let (current, _) = newest_of(&env, db);
    std::fs::write(
        env.path("revocations/d.yaml"),
        format!("revocations:\n  - serial: \"{current}\"\n    reason: key_compromise\n"),
    )
    .unwrap();
    env.commit_all("db-01's key was compromised");
    let (plan, _) = env.plan_json(&[]);
    let r = plan_request(&plan, db);
    assert_eq!(r["action"], "revoked", "{r}");
    assert!(r.get("findings").is_none(), "{r}");
    env.ok(&["apply"], 3);
    let (plan, _) = env.plan_json(&[]);
    assert_eq!(action(&plan, db), "revoked", "{plan}");

    let api = "requests/servers/api.yaml";
    let (first, not_after) = newest_of(&env, api);
    // Renewed from the same CSR: two live certificates of one key.
    let renewal = rfc3339(not_after - time::Duration::days(5));
    env.ok(&["apply", "--now", &renewal], 3);
    let (second, not_after) = newest_of(&env, api);
    assert_ne!(first, second, "renewed");
    std::fs::write(
        env.path("revocations/a.yaml"),
        format!("revocations:\n  - serial: \"{first}\"\n    reason: key_compromise\n"),
    )
    .unwrap();
    env.commit_all("the first api certificate's key was compromised");
    // The entry names the first; the second, of the same key, is revoked with it.
    let (plan, _) = env.plan_json(&["--at", &renewal]);
    let entry = (plan["revocations"].as_array().unwrap().iter())
        .find(|r| r["file"] == "revocations/a.yaml")
        .unwrap();
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(entry["serials"], serde_json::json!(both), "{plan}");
    // In the run that revokes it, and in every run after, the key gets no new certificate.
    let next_renewal = rfc3339(not_after - time::Duration::days(5));
    for at in [&renewal, &next_renewal] {
        let (plan, _) = env.plan_json(&["--at", at]);
        assert_eq!(action(&plan, api), "revoked", "{at}: {plan}");
    }
    env.ok(&["apply", "--now", &renewal], 3);
    let idx = env.index("example-ca");
    for serial in [&first, &second] {
        assert_eq!(idx["certs"][serial]["revoked"]["reason"], "key_compromise");
    }
    let (plan, _) = env.plan_json(&["--at", &next_renewal]);
    assert_eq!(action(&plan, api), "revoked", "{plan}");
    assert_eq!(newest_of(&env, api).0, second, "nothing issued for the key");
}

/// Defect `key-compromise-by-serial-leaves-the-key-live`: a key-compromise entry naming a
/// request's newest certificate revoked that one only: its request's older certificate of the
/// same key (renewed from the same CSR) stayed valid, and gitca served it again as the
/// request's certificate. Every unexpired certificate of the key is revoked now.
#[test]
fn a_key_compromise_by_serial_revokes_every_live_certificate_of_the_key() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let alice = "requests/clients/alice.yaml";
    let (older, _) = newest_of(&env, alice);
    let older_pem = env.tmp().join("older.pem");
    std::fs::copy(env.path("issued/clients/alice.pem"), &older_pem).unwrap();
    // Reissued from the same CSR: two live certificates of one key.
    env.edit(alice, |y| format!("{y}lifetime: 20d\n"));
    env.commit_all("alice: shorter lifetime");
    env.ok(&["apply"], 3);
    let (newer, _) = newest_of(&env, alice);
    assert_ne!(older, newer);
    std::fs::write(
        env.path("revocations.yaml"),
        format!("revocations:\n  - serial: \"{newer}\"\n    reason: key_compromise\n"),
    )
    .unwrap();
    env.commit_all("alice's key was compromised");
    env.ok(&["apply"], 3);
    let idx = env.index("example-ca");
    for serial in [&older, &newer] {
        assert_eq!(
            idx["certs"][serial]["revoked"]["reason"], "key_compromise",
            "{serial}"
        );
    }
    assert!(
        !env.path("issued/clients/alice.pem").exists(),
        "no certificate of the key is served"
    );
    if have("openssl") {
        let (ok, out) = openssl_verify(
            &env.path("ca/root-ca.pem"),
            Some(&env.path("ca/issuing-ca.pem")),
            &env.path("crl/example-ca.crl.pem"),
            &older_pem,
        );
        assert!(!ok && out.contains("certificate revoked"), "{out}");
    }
    env.ok(&["verify"], 0);
}

/// Defect `revocation-listed-twice`: an entry for a serial revoked already, appended with
/// `key_compromise` to raise its reason as the README says, took the first entry's identity,
/// and every later plan, apply and `gitca crl` stopped ("the published revocation was
/// changed"). The raise is an entry of its own now; a third entry for the serial is rejected
/// as listed twice, and the runs go on.
#[test]
fn a_key_compromise_entry_for_a_revoked_serial_raises_it_and_a_repeat_is_rejected() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let (serial, _) = newest_of(&env, "requests/servers/web-01.yaml");
    let superseded = format!("revocations:\n  - serial: \"{serial}\"\n    reason: superseded\n");
    std::fs::write(env.path("revocations.yaml"), &superseded).unwrap();
    env.commit_all("web-01 superseded");
    env.ok(&["apply"], 3);
    let raised = format!("{superseded}  - serial: \"{serial}\"\n    reason: key_compromise\n");
    std::fs::write(env.path("revocations.yaml"), &raised).unwrap();
    env.commit_all("web-01's key was compromised after all");
    let (plan, _) = env.plan_json(&[]);
    let revs = plan["revocations"].as_array().unwrap();
    assert_eq!(revs[0]["action"], "already_revoked", "{plan}");
    assert_eq!(revs[1]["action"], "revoke", "{plan}");
    env.ok(&["apply"], 3);
    let idx = env.index("example-ca");
    assert_eq!(idx["certs"][&serial]["revoked"]["reason"], "key_compromise");
    let (plan, _) = env.plan_json(&[]);
    let revs = plan["revocations"].as_array().unwrap();
    assert!(
        revs.iter().all(|r| r["action"] == "already_revoked"),
        "{plan}"
    );
    // Once more, with another reason: rejected, and every command goes on.
    let repeated = format!("{raised}  - serial: \"{serial}\"\n    reason: unspecified\n");
    std::fs::write(env.path("revocations.yaml"), repeated).unwrap();
    env.commit_all("web-01 once more");
    for _ in 0..2 {
        let (plan, _) = env.plan_json(&[]);
        let revs = plan["revocations"].as_array().unwrap();
        assert_eq!(revs[0]["action"], "already_revoked", "{plan}");
        assert_eq!(revs[1]["action"], "already_revoked", "{plan}");
        assert_eq!(revs[2]["action"], "rejected", "{plan}");
        assert!(revs[2].to_string().contains("listed twice"), "{plan}");
        env.ok(&["apply"], 3);
    }
    env.ok(&["crl", "--force"], 0);
    // Found by the review of the fix: verify knew the raise by the first entry's key, and
    // reported it disappeared on every run.
    env.ok(&["verify"], 0);
    // Published entries stay append-only: the raise removed stops the run.
    std::fs::write(env.path("revocations.yaml"), &superseded).unwrap();
    env.commit_all("drop the raise");
    let o = env.gitca(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("removed") && err.contains("append-only"),
        "{err}"
    );
}

/// A key-compromise entry by request raises the reason only of the certificates of the key
/// the request holds now: one of a key it held before, revoked as superseded, stays so (its
/// key was not said to be compromised).
#[test]
fn a_key_compromise_by_request_leaves_the_certificates_of_an_earlier_key_alone() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let db = "requests/servers/db-01.yaml";
    let (old_key, _) = newest_of(&env, db);
    // A new key, and the old certificate revoked as superseded once the new one is issued.
    new_p256_csr(
        &env.path("requests/servers/db-01.csr.pem"),
        "db-01.internal.example.com",
    );
    let y = env.read(db);
    std::fs::write(env.path(db), format!("{y}\nrevoke_superseded: true\n")).unwrap();
    env.commit_all("db-01 re-keyed");
    env.ok(&["apply"], 3);
    let (new_key, _) = newest_of(&env, db);
    assert_ne!(old_key, new_key);
    let idx = env.index("example-ca");
    assert_eq!(idx["certs"][&old_key]["revoked"]["reason"], "superseded");
    std::fs::create_dir_all(env.path("revocations")).unwrap();
    std::fs::write(
        env.path("revocations/a.yaml"),
        format!("revocations:\n  - request: {db}\n    reason: key_compromise\n"),
    )
    .unwrap();
    env.commit_all("db-01's key was compromised");
    let (plan, _) = env.plan_json(&[]);
    let entry = &plan["revocations"][0];
    assert_eq!(entry["serials"], serde_json::json!([new_key]), "{plan}");
    env.ok(&["apply"], 3);
    let idx = env.index("example-ca");
    assert_eq!(
        idx["certs"][&new_key]["revoked"]["reason"],
        "key_compromise"
    );
    assert_eq!(idx["certs"][&old_key]["revoked"]["reason"], "superseded");
}
