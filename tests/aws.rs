//! gitca with its CA keys in KMS and its state in S3, against a real S3/KMS API server (moto,
//! started by .ci/run via tests/moto_launcher.py) through the real AWS SDK over HTTP.

mod common;
use aws_sdk_kms::types::KeySpec;
use common::moto::{self, aws_vars, create_bucket, create_key, keys, record_serials, unique};
use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

struct AwsCa {
    env: Env,
    bucket: String,
    s3: aws_sdk_s3::Client,
    root_key: String,
    issuing_key: String,
}

fn kms_config(issuing: &str, root: &str, bucket: &str, extra: &str) -> String {
    format!(
        "signer:\n  kms:\n    key: {issuing}\n    root_key: {root}\n    max_in_flight: 8\n{extra}\
state:\n  s3:\n    bucket: {bucket}\n    prefix: state/example-ca\n    force_path_style: true\n\
publish:\n  s3:\n    bucket: {bucket}\n    prefix: pki\n    force_path_style: true\n"
    )
}

async fn setup(spec: KeySpec, exclude: &[&str]) -> Option<AwsCa> {
    let endpoint = moto::endpoint()?;
    let kms = moto::kms(&endpoint).await;
    let s3 = moto::s3(&endpoint).await;
    let root_key = create_key(&kms, spec.clone()).await;
    let issuing_key = create_key(&kms, spec).await;
    let bucket = unique("gitca");
    create_bucket(&s3, &bucket).await;
    let mut env = Env::from(EXAMPLE, exclude);
    env.vars = aws_vars(&endpoint);
    env.edit("gitca.yaml", |cfg| {
        format!(
            "{cfg}\n{}",
            kms_config(&issuing_key, &root_key, &bucket, "")
        )
    });
    env.commit_all("KMS and S3");
    env.init(&[]);
    Some(AwsCa {
        env,
        bucket,
        s3,
        root_key,
        issuing_key,
    })
}

/// An object's bytes from the test bucket.
async fn object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let o = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

/// Commits the example repository's revocations (old-laptop's certificates, superseded): the
/// next apply signs CRL 2.
fn commit_the_example_revocations(env: &Env) {
    std::fs::copy(
        std::path::Path::new(EXAMPLE).join("revocations.yaml"),
        env.path("revocations.yaml"),
    )
    .unwrap();
    env.commit_all("revoke");
}

fn verify_leaves(env: &Env) -> usize {
    let leaves = leaf_files(&env.path("issued"));
    if have("openssl") {
        for l in &leaves {
            let (ok, out) = openssl_verify(
                &env.path("ca/root-ca.pem"),
                Some(&env.path("ca/issuing-ca.pem")),
                &env.path("crl/example-ca.crl.pem"),
                l,
            );
            assert!(ok, "{}: {out}", l.display());
        }
    }
    leaves.len()
}

async fn content_type(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    s3.head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"))
        .content_type()
        .unwrap_or_default()
        .to_string()
}

async fn full_apply(spec: KeySpec) {
    let Some(ca) = setup(spec, &["revocations.yaml"]).await else {
        return;
    };
    let env = &ca.env;
    let out = env.ok(&["apply"], 3);
    assert!(
        out.contains("KMS: ") && out.contains("call(s)"),
        "summary reports KMS calls: {out}"
    );
    assert_eq!(verify_leaves(env), 7);
    // No key material anywhere on disk: the keys live in KMS.
    assert!(
        walkdir::WalkDir::new(&env.data)
            .into_iter()
            .filter_map(|e| e.ok())
            .all(|e| !e.path().to_string_lossy().ends_with(".key"))
    );
    let state = keys(&ca.s3, &ca.bucket, "state/example-ca/").await;
    assert!(
        state.contains(&"state/example-ca/index.json".to_string()),
        "{state:?}"
    );
    // One round: its seven records in one object.
    let rounds: Vec<_> = state.iter().filter(|k| k.contains("/certs/")).collect();
    assert!(
        rounds.len() == 1 && rounds[0].contains("/certs/rounds/"),
        "{rounds:?}"
    );
    let serials = record_serials(&ca.s3, &ca.bucket, "state/example-ca/certs/").await;
    assert_eq!(serials.len(), 7, "{serials:?}");
    assert!(
        !state
            .iter()
            .any(|k| k.contains("/intents/") || k.ends_with("lease.json")),
        "{state:?}"
    );
    assert_eq!(
        content_type(&ca.s3, &ca.bucket, "pki/example-ca.crl").await,
        "application/pkix-crl"
    );
    assert_eq!(
        content_type(&ca.s3, &ca.bucket, "pki/example-ca.crt").await,
        "application/pkix-cert"
    );

    // Revoke through KMS-signed CRL 2; the published CRL moves forward.
    let saved = env.tmp().join("old-laptop.pem");
    std::fs::copy(env.path("issued/clients/old-laptop.pem"), &saved).unwrap();
    commit_the_example_revocations(env);
    let out = env.ok(&["apply"], 3);
    assert!(
        out.contains("CRL number 2") && out.contains("published"),
        "{out}"
    );
    if have("openssl") {
        let (ok, msg) = openssl_verify(
            &env.path("ca/root-ca.pem"),
            Some(&env.path("ca/issuing-ca.pem")),
            &env.path("crl/example-ca.crl.pem"),
            &saved,
        );
        assert!(!ok && msg.contains("certificate revoked"), "{msg}");
        assert_eq!(
            object(&ca.s3, &ca.bucket, "pki/example-ca.crl").await,
            std::fs::read(env.path("crl/example-ca.crl")).unwrap(),
            "published CRL is the committed one"
        );
    }
    // A second apply is a no-op.
    let out = env.ok(&["apply"], 3);
    assert!(
        out.contains("0 signature(s)") && out.contains("nothing to commit"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_p256_ca_with_s3_state() {
    full_apply(KeySpec::EccNistP256).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_p384_ca_with_s3_state() {
    full_apply(KeySpec::EccNistP384).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kms_rsa2048_ca_with_s3_state() {
    full_apply(KeySpec::Rsa2048).await;
}

/// Defect `crl-pem-stale`: a run stopped between publishing the CRL (DER) and its PEM left the
/// PEM one CRL behind; its rerun found the DER as new as its own and skipped both, so the PEM
/// stayed stale until the next CRL. The PEM is now compared and brought up on its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_crl_published_without_its_pem_gets_it_on_the_rerun() {
    let Some(ca) = setup(KeySpec::EccNistP256, &["revocations.yaml"]).await else {
        return;
    };
    let env = &ca.env;
    env.ok(&["apply"], 3);
    let published = |key: &'static str| object(&ca.s3, &ca.bucket, key);
    let put = |key: &'static str, body: Vec<u8>| {
        let s3 = ca.s3.clone();
        let bucket = ca.bucket.clone();
        async move {
            s3.put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    };
    let first_pem = published("pki/example-ca.crl.pem").await;
    commit_the_example_revocations(env);
    let out = env.ok(&["apply"], 3);
    assert!(out.contains("CRL number 2"), "{out}");
    // The state a run stopped after the DER leaves: the PEM of CRL 1, and the index not yet
    // saying CRL 2 is published.
    put("pki/example-ca.crl.pem", first_pem.clone()).await;
    let mut index: serde_json::Value =
        serde_json::from_slice(&published("state/example-ca/index.json").await).unwrap();
    assert_eq!(index["published_crl_number"], 2);
    index["published_crl_number"] = 1.into();
    put(
        "state/example-ca/index.json",
        serde_json::to_vec(&index).unwrap(),
    )
    .await;
    env.ok(&["apply"], 3);
    let pem = published("pki/example-ca.crl.pem").await;
    assert!(pem != first_pem, "the PEM is still that of CRL 1");
    let (label, der) = der::pem::decode_vec(&pem).unwrap();
    assert_eq!(label, "X509 CRL");
    assert_eq!(
        der,
        std::fs::read(env.path("crl/example-ca.crl")).unwrap(),
        "the published PEM holds the committed CRL"
    );
    assert_eq!(published("pki/example-ca.crl").await, der);
}

/// Defect `published-crl-of-another-issuer` (found by review): the publication compared CRL
/// numbers whatever their issuer. A CRL of another CA at this name (the CA before a rotation,
/// same name, another key) numbered higher kept ours from being published, for good: the
/// state recorded it as published. Only a CRL of this issuer numbered at least as high stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_published_crl_of_another_issuer_is_replaced_whatever_its_number() {
    let Some(ca) = setup(KeySpec::EccNistP256, &["revocations.yaml"]).await else {
        return;
    };
    let env = &ca.env;
    env.ok(&["apply"], 3);
    // Another CA of the same name (a local key) with CRL number 4.
    let other = Env::from(EXAMPLE, &["revocations.yaml"]);
    other.init(&[]);
    other.ok(&["apply"], 3);
    for _ in 0..3 {
        other.ok(&["crl", "--force"], 0);
    }
    let theirs = std::fs::read(other.path("crl/example-ca.crl")).unwrap();
    assert_eq!(gitca::adapters::publish::crl_number(&theirs), Some(4));
    ca.s3
        .put_object()
        .bucket(&ca.bucket)
        .key("pki/example-ca.crl")
        .body(theirs.clone().into())
        .send()
        .await
        .unwrap();
    let out = env.ok(&["crl", "--force"], 0);
    assert!(out.contains("CRL number 2"), "{out}");
    assert_eq!(
        object(&ca.s3, &ca.bucket, "pki/example-ca.crl").await,
        std::fs::read(env.path("crl/example-ca.crl")).unwrap(),
        "our CRL 2 replaced the other issuer's CRL 4"
    );
}

/// Defect `s3-prefix-stripped-twice`: a listing under a state prefix that its own keys repeat
/// (`intents/`) came back with the prefix stripped twice, so recovery missed those intents.
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_strips_the_state_prefix_once() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let s3 = moto::s3(&endpoint).await;
    let store = moto::state_store(&s3, "gitca-prefix", "intents").await;
    store.put_new("intents/0a.json", b"[]").await.unwrap();
    assert_eq!(store.list("intents").await.unwrap(), ["intents/0a.json"]);
    assert!(store.get("intents/0a.json").await.unwrap().is_some());
}

/// Defect found by review (`get-public-key-not-retried`): opening the KMS key made one
/// GetPublicKey call, so a throttled one (the key's request quota, shared with another apply's
/// signing) stopped the run as needing a human. It is retried as a signature is, up to
/// `max_retries`.
#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_get_public_key_is_retried() {
    use gitca::adapters::kms::KmsSigner;
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    // As gitca builds its client: the SDK's own retries off (gitca retries, and counts).
    let kms = moto::kms(&endpoint).await;
    let kms = aws_sdk_kms::Client::from_conf(
        kms.config()
            .to_builder()
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build(),
    );
    let throttled = || async {
        let out = kms
            .create_key()
            .key_spec(KeySpec::EccNistP256)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .description("throttle-get-public-key:2")
            .send()
            .await
            .unwrap();
        out.key_metadata().unwrap().arn().unwrap().to_string()
    };
    let key = throttled().await;
    assert!(KmsSigner::open(kms.clone(), &key, 4, 2).await.is_ok());
    let key = throttled().await;
    let err = KmsSigner::open(kms.clone(), &key, 4, 1)
        .await
        .err()
        .unwrap();
    assert!(err.contains("ThrottlingException"), "{err}");
}

/// A CRL over 4096 bytes goes through KMS as MessageType=DIGEST; openssl verifies the result.
#[tokio::test(flavor = "multi_thread")]
async fn large_crl_is_signed_through_the_digest_path() {
    use gitca::adapters::kms::{KmsSigner, MAX_RAW_MESSAGE};
    use gitca::adapters::signer::{Signer, sign_verified};
    use gitca::domain::crl::{self, CrlEntry};
    use gitca::domain::profile::{self, CaParams, Urls};
    use gitca::domain::revocation::Reason;
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    if !have("openssl") {
        return;
    }
    let kms = moto::kms(&endpoint).await;
    for spec in [KeySpec::EccNistP256, KeySpec::EccNistP384, KeySpec::Rsa2048] {
        let key = create_key(&kms, spec.clone()).await;
        let signer = KmsSigner::open(kms.clone(), &key, 4, 3).await.unwrap();
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let subject = gitca::domain::names::Subject {
            common_name: Some("KMS CRL test CA".into()),
            ..Default::default()
        }
        .to_name()
        .unwrap();
        let params = CaParams {
            subject,
            public_key: signer.public_key().clone(),
            self_algorithm: signer.algorithm(),
            serial: vec![0x11; 20],
            not_before: now,
            not_after: now + time::Duration::days(30),
            path_len: None,
        };
        let unsigned = profile::ca(&params, None, &Urls::default()).unwrap();
        let sig = sign_verified(&signer, &unsigned.tbs_der).await.unwrap();
        let ca_der = unsigned.assemble(&sig).unwrap();
        let ca = <x509_cert::Certificate as der::Decode>::from_der(&ca_der).unwrap();
        let issuer = gitca::app::context::issuer_of(&ca).unwrap();
        let entries: Vec<CrlEntry> = (0..200u32)
            .map(|i| CrlEntry {
                serial_hex: format!("{:040x}", 0x1000_0000u64 + i as u64),
                date: now,
                reason: Reason::KeyCompromise,
            })
            .collect();
        let tbs = crl::tbs(&issuer, 7, now, now + time::Duration::days(7), &entries).unwrap();
        assert!(
            tbs.len() > MAX_RAW_MESSAGE,
            "the CRL must exceed KMS's RAW limit ({} bytes)",
            tbs.len()
        );
        let sig = sign_verified(&signer, &tbs)
            .await
            .expect("DIGEST signature verifies locally");
        let der = crl::assemble(&tbs, &signer.algorithm(), &sig).unwrap();
        let dir = tempfile::tempdir().unwrap();
        use der::Encode;
        std::fs::write(dir.path().join("ca.der"), ca.to_der().unwrap()).unwrap();
        std::fs::write(dir.path().join("crl.der"), &der).unwrap();
        let ca_pem = std::process::Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in", "ca.der", "-out", "ca.pem"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(ca_pem.status.success());
        let o = std::process::Command::new("openssl")
            .args([
                "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && msg.contains("verify OK"),
            "{spec:?}: {msg}"
        );
    }
}

/// Four applies at once against one bucket and one remote: every request issued exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_issue_exactly_once() {
    let Some(ca) = setup(KeySpec::EccNistP256, &["revocations.yaml"]).await else {
        return;
    };
    let env = &ca.env;
    let remote = env.bare_remote();
    let mut children = Vec::new();
    for n in 0..4 {
        let dir = env.tmp().join(format!("runner-{n}"));
        git_in(
            env.tmp(),
            &[
                "clone",
                "-q",
                remote.to_str().unwrap(),
                dir.to_str().unwrap(),
            ],
        );
        children.push(
            env.command_in(&dir, &["apply", "--push"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut outs = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            o.status.code(),
            Some(3),
            "each runner exits cleanly (3: the example's rejected request): {text}"
        );
        outs.push(text);
    }
    let signed: usize = outs.iter().map(|o| o.matches("\n  issue ").count()).sum();
    assert_eq!(signed, 7, "seven issuances across all runners: {outs:#?}");
    let serials = record_serials(&ca.s3, &ca.bucket, "state/example-ca/certs/").await;
    serials
        .windows(2)
        .for_each(|w| assert_ne!(w[0], w[1], "recorded twice"));
    assert_eq!(
        serials.len(),
        7,
        "each certificate recorded once: {serials:?}"
    );
    let idx: serde_json::Value = {
        let o = ca
            .s3
            .get_object()
            .bucket(&ca.bucket)
            .key("state/example-ca/index.json")
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&o.body.collect().await.unwrap().into_bytes()).unwrap()
    };
    let mut per_request = std::collections::BTreeMap::new();
    for c in idx["certs"].as_object().unwrap().values() {
        *per_request
            .entry(c["request_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert!(
        per_request.values().all(|n| *n == 1) && per_request.len() == 7,
        "{per_request:?}"
    );
    assert!(
        keys(&ca.s3, &ca.bucket, "state/example-ca/lease.json")
            .await
            .is_empty(),
        "lease released"
    );
    let log = git_in(&remote, &["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines()
            .filter(|l| l.starts_with("gitca: issue"))
            .count(),
        1,
        "{log}"
    );
}

/// A holder killed mid-apply: after its lease expires the next apply takes over and converges.
#[tokio::test(flavor = "multi_thread")]
async fn killed_holder_lease_is_taken_over_and_converges() {
    let Some(ca) = setup(KeySpec::EccNistP256, &["revocations.yaml"]).await else {
        return;
    };
    let env = &ca.env;
    let mut stuck = env
        .command_in(
            &env.repo,
            &["apply", "--hang-at", "after-sign", "--lease-ttl", "3s"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // One round: its seven intents are one object.
    while keys(&ca.s3, &ca.bucket, "state/example-ca/intents/")
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the first apply never recorded its intents"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While the holder is alive, a second apply that will not wait exits with a clear message.
    let o = env.gitca(&["apply", "--lease-wait", "0s"]);
    assert_error(&o, "another apply holds the lease");
    stuck.kill().unwrap();
    stuck.wait().unwrap();
    assert!(
        !keys(&ca.s3, &ca.bucket, "state/example-ca/lease.json")
            .await
            .is_empty(),
        "the killed holder left its lease"
    );
    let started = Instant::now();
    let out = env.ok(&["apply", "--lease-wait", "60s"], 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for the lease to expire"
    );
    assert!(out.contains("completed 7"), "{out}");
    assert_eq!(
        record_serials(&ca.s3, &ca.bucket, "state/example-ca/certs/")
            .await
            .len(),
        7
    );
    assert!(
        keys(&ca.s3, &ca.bucket, "state/example-ca/intents/")
            .await
            .is_empty()
    );
    assert_eq!(verify_leaves(env), 7);
}

/// A stale index write gets 412; the update re-reads and re-applies; nothing is overwritten.
#[tokio::test(flavor = "multi_thread")]
async fn stale_index_write_is_a_conflict_and_retries_from_fresh_state() {
    use gitca::adapters::state_store::StoreError;
    use gitca::app::index::IndexHandle;
    use gitca::domain::state::INDEX_KEY;
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let s3 = moto::s3(&endpoint).await;
    let store = moto::state_store(&s3, "gitca-cas", "p").await;

    let v1 = store.put_new("x.json", b"1").await.unwrap();
    assert!(
        matches!(
            store.put_new("x.json", b"2").await,
            Err(StoreError::Conflict(_))
        ),
        "If-None-Match: * refuses an existing object"
    );
    store.put_if("x.json", b"2", &v1).await.unwrap();
    assert!(
        matches!(
            store.put_if("x.json", b"3", &v1).await,
            Err(StoreError::Conflict(_))
        ),
        "If-Match with a stale ETag is a 412"
    );
    assert_eq!(
        store.get("x.json").await.unwrap().unwrap().bytes,
        b"2",
        "nothing overwritten"
    );
    // The quiet path reads versions alone (HEAD): the same ETag a GET gives, None if absent.
    let got = store.get("x.json").await.unwrap().unwrap().version;
    assert_eq!(store.version("x.json").await.unwrap(), Some(got));
    assert_ne!(store.version("x.json").await.unwrap(), Some(v1.clone()));
    assert_eq!(store.version("absent.json").await.unwrap(), None);

    let mut a = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
    let mut b = IndexHandle::open(store.clone(), "ca".into()).await.unwrap();
    b.update(|i| i.crl_number = 5).await.unwrap();
    a.update(|i| i.crl_number += 1).await.unwrap();
    assert_eq!(a.conflicts, 1, "a's first write was stale");
    assert_eq!(
        a.index.crl_number, 6,
        "a re-applied its change on b's state"
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&store.get(INDEX_KEY).await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(stored["crl_number"], 6);

    // Listing paginates past 1000 keys.
    for n in 0..1005 {
        store
            .put_new(&format!("many/{n:05}.json"), b"{}")
            .await
            .unwrap();
    }
    assert_eq!(store.list("many").await.unwrap().len(), 1005);
}

fn assert_error(o: &std::process::Output, want: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(want), "expected {want:?} in: {err}");
}

/// Wrong key, missing key, missing bucket, denied access: each a clear error, nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn aws_misconfiguration_is_a_clear_error_and_writes_nothing() {
    let Some(ca) = setup(KeySpec::EccNistP256, &["revocations.yaml"]).await else {
        return;
    };
    let env = &ca.env;
    let cfg = env.read("gitca.yaml");
    let with = |s: &str| {
        std::fs::write(env.path("gitca.yaml"), s).unwrap();
        env.commit_all("misconfigure")
    };
    let nothing_written = || async {
        assert!(
            keys(&ca.s3, &ca.bucket, "state/").await.is_empty(),
            "state written"
        )
    };

    // The root's key where the issuing key belongs: it does not match ca/issuing-ca.pem.
    let h = with(&cfg.replace(
        &format!("key: {}", ca.issuing_key),
        &format!("key: {}", ca.root_key),
    ));
    assert_error(
        &env.gitca(&["apply"]),
        "does not match the CA certificate ca/issuing-ca.pem",
    );
    nothing_written().await;
    assert_eq!(env.head(), h, "nothing committed");

    let h = with(&cfg.replace(
        &format!("key: {}", ca.issuing_key),
        "key: alias/does-not-exist",
    ));
    assert_error(&env.gitca(&["apply"]), "KMS key alias/does-not-exist");
    nothing_written().await;
    assert_eq!(env.head(), h, "nothing committed");

    with(&cfg.replace(
        &format!("bucket: {}\n    prefix: state", ca.bucket),
        "bucket: gitca-no-such-bucket\n    prefix: state",
    ));
    let h = env.head();
    assert_error(
        &env.gitca(&["apply"]),
        "bucket gitca-no-such-bucket does not exist",
    );
    assert_eq!(env.head(), h, "nothing committed");
    nothing_written().await;

    // Defect found by review (`publication-errors-all-retryable`): a publication bucket that
    // does not exist was reported as retryable, as if a rerun could fix it.
    with(&cfg.replace(
        &format!("bucket: {}\n    prefix: pki", ca.bucket),
        "bucket: gitca-no-such-publish-bucket\n    prefix: pki",
    ));
    let o = env.gitca(&["crl", "--force"]);
    assert_error(&o, "NoSuchBucket");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("retryable"));
    with(&cfg);

    // Denied access: a server that enforces IAM and does not know these credentials.
    let denied = moto::start_auth_moto();
    let mut env2 = Env::from(EXAMPLE, &[]);
    env2.vars = aws_vars(&denied.endpoint);
    std::fs::write(env2.path("gitca.yaml"), &cfg).unwrap();
    for f in ["ca/root-ca.pem", "ca/issuing-ca.pem"] {
        std::fs::create_dir_all(env2.path("ca")).unwrap();
        std::fs::copy(env.path(f), env2.path(f)).unwrap();
    }
    env2.commit_all("denied");
    assert_error(&env2.gitca(&["plan"]), "access denied");
}

/// KMS answering ThrottlingException above a rate: apply slows its shared send rate, retries,
/// and finishes.
#[tokio::test(flavor = "multi_thread")]
async fn throttled_kms_is_paced_retried_and_finishes() {
    let Some(_) = moto::endpoint() else { return };
    let throttled = moto::start_moto(&["--kms-sign-rate", "3"]);
    let kms = moto::kms(&throttled.endpoint).await;
    let s3 = moto::s3(&throttled.endpoint).await;
    let root = create_key(&kms, KeySpec::EccNistP256).await;
    let issuing = create_key(&kms, KeySpec::EccNistP256).await;
    let bucket = unique("gitca-throttle");
    create_bucket(&s3, &bucket).await;
    let mut env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.vars = aws_vars(&throttled.endpoint);
    env.edit("gitca.yaml", |cfg| {
        format!("{cfg}\n{}", kms_config(&issuing, &root, &bucket, ""))
    });
    env.commit_all("KMS");
    env.init(&[]);
    let out = env.ok(&["apply"], 3);
    let line = out
        .lines()
        .find(|l| l.contains("KMS:"))
        .unwrap_or_default()
        .to_string();
    let retried: u64 = line
        .split(", ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        retried > 0,
        "8 signatures at once against 3/s must be throttled and retried: {out}"
    );
    assert_eq!(verify_leaves(&env), 7);
}

/// Defect `aws-call-stalls-forever`: an endpoint that takes the connection and never answers
/// (a half-open connection, a stalled KMS) held the apply for good, and it renewed its lease
/// meanwhile. Calls now time out, and the run ends with an error that names the timeout.
#[test]
fn an_endpoint_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Accepts every connection and keeps it open, saying nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let mut env = Env::from(EXAMPLE, &[]);
    env.vars = aws_vars(&endpoint);
    env.edit("gitca.yaml", |cfg| {
        // One attempt: a timeout is retried like a throttle, each waiting the read timeout.
        format!("{cfg}\nsigner:\n  kms:\n    key: alias/gitca-stalled\n    max_retries: 0\n")
    });
    env.commit_all("a KMS key behind a stalled endpoint");
    let csr = env.tmp().join("issuing.csr.pem");
    let mut child = env
        .command_in(&env.repo, &["init", "--csr-out", csr.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog, not a measurement: far above the read timeout, so the test cannot hang.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "gitca still waits for an endpoint that never answers"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("timed out") || err.contains("timeout"),
        "{err}"
    );
}

/// A KMS issuing key without a root key in KMS: init writes the issuing CA's CSR for an external
/// root, signed by the KMS key (proof of possession), and commits nothing.
#[tokio::test(flavor = "multi_thread")]
async fn init_writes_an_issuing_ca_csr_for_an_external_root() {
    let Some(endpoint) = moto::endpoint() else {
        return;
    };
    let kms = moto::kms(&endpoint).await;
    let issuing = create_key(&kms, KeySpec::EccNistP384).await;
    let mut env = Env::from(EXAMPLE, &[]);
    env.vars = aws_vars(&endpoint);
    env.edit("gitca.yaml", |cfg| {
        format!("{cfg}\nsigner:\n  kms:\n    key: {issuing}\n")
    });
    let head = env.commit_all("KMS issuing key only");
    let csr = env.tmp().join("issuing.csr.pem");
    let out = env.ok(&["init", "--csr-out", csr.to_str().unwrap()], 0);
    assert!(out.contains("CSR"), "{out}");
    assert_eq!(env.head(), head, "nothing committed");
    if have("openssl") {
        let o = std::process::Command::new("openssl")
            .args(["req", "-verify", "-noout", "-text", "-in"])
            .arg(&csr)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && text.contains("example-ca Issuing CA") && text.contains("384"),
            "{text}"
        );
    }
}
