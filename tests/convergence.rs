//! Exactly-once issuance and crash safety: apply stopped after every step converges on rerun;
//! history rewrites are refused; a push race is retried on the new remote head.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};

const STEPS: [&str; 7] = [
    "after-intent",
    "after-sign",
    "after-record",
    "after-state",
    "after-crl",
    "after-outputs",
    "before-commit",
];

/// Every request has exactly one certificate in the state; every certificate in the state is in
/// the repo; no intent is left.
fn assert_converged(env: &Env, expect_requests: usize) {
    let idx = env.index("example-ca");
    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for c in idx["certs"].as_object().unwrap().values() {
        *per_request
            .entry(c["request_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_request.len(), expect_requests, "{per_request:?}");
    assert!(
        per_request.values().all(|n| *n == 1),
        "a request got two certificates: {per_request:?}"
    );
    let files_under = |dir: &str| state_files(env, dir);
    let recorded = recorded_serials(env);
    let records: BTreeSet<String> = recorded.iter().cloned().collect();
    assert_eq!(
        records.len(),
        recorded.len(),
        "a certificate recorded twice"
    );
    let indexed: BTreeSet<String> = idx["certs"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(records, indexed, "records and index agree");
    assert!(files_under("intents").is_empty(), "intents left behind");
    let leaves = leaf_files(&env.path("issued"));
    assert_eq!(leaves.len(), expect_requests);
    // Each repo certificate is the one the state says is current.
    let repo_serials: BTreeSet<String> = leaves
        .iter()
        .map(|p| openssl_serial(p).to_lowercase())
        .collect();
    let canon = |s: &str| s.trim_start_matches('0').to_string();
    assert_eq!(
        repo_serials
            .iter()
            .map(|s| canon(s))
            .collect::<BTreeSet<_>>(),
        indexed.iter().map(|s| canon(s)).collect::<BTreeSet<_>>()
    );
    assert!(
        env.git(&["status", "--porcelain"]).trim().is_empty(),
        "work tree clean"
    );
    // Plumbing does not refresh the index: the entries gitca wrote carry their file stat.
    env.git(&["diff-files", "--quiet"]);
    env.git(&["diff-index", "--quiet", "HEAD", "--"]);
}

/// File names under a folder of the example CA's local state, which shards per-certificate
/// folders (certs/ab/ab….json).
/// The files of a state folder (sharded into subfolders).
fn state_paths(env: &Env, dir: &str) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(env.state("example-ca").join(dir))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        // A write in progress (its temp file, before or just after it is linked into place) is
        // not an object yet, as the store's own listing says.
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.into_path())
        .collect()
}

/// The records in a round object (`certs/rounds/…`), or the one record of a file from before
/// rounds.
fn records_in(path: &std::path::Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    match path.parent().unwrap().ends_with("certs/rounds") {
        true => v.as_array().unwrap().clone(),
        false => vec![v],
    }
}

/// The serial of every certificate record in the state, once per record.
fn recorded_serials(env: &Env) -> Vec<String> {
    let mut serials = Vec::new();
    for p in state_paths(env, "certs") {
        for r in records_in(&p) {
            assert!(r["certificate"].is_string(), "{p:?}: a record is signed");
            serials.push(r["serial"].as_str().unwrap().to_string());
        }
    }
    serials
}

/// The example CA, its first apply stopped by the injected failure at `step`.
fn stopped_at(step: &str) -> Env {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let o = env.gitca(&["apply", "--fail-at", step]);
    assert_eq!(o.status.code(), Some(1), "{step}: injected failure");
    env
}

fn state_files(env: &Env, dir: &str) -> Vec<String> {
    state_paths(env, dir)
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

#[test]
fn a_crash_after_any_step_converges_without_double_issuance() {
    if !have("openssl") {
        return;
    }
    for step in STEPS {
        let env = Env::from(EXAMPLE, &["revocations.yaml"]);
        env.init(&[]);
        let head = env.head();
        let o = env.gitca(&["apply", "--fail-at", step]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{step}: injected failure is an error"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("injected failure"),
            "{step}"
        );
        assert_eq!(
            env.head(),
            head,
            "{step}: nothing committed by the failed run"
        );

        let events = env.tmp().join(format!("events-{step}.jsonl"));
        let out = env.ok(&["apply", "--events", events.to_str().unwrap()], 3);
        let issued = out.matches("\n  issue ").count();
        // Found by review: certificates completed from the interrupted run's intents had no
        // `issued` event (that run sent none).
        let announced = std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"event\":\"issued\""))
            .count();
        if step.starts_with("after-") && ["intent", "sign", "record"].contains(&&step[6..]) {
            assert_eq!(
                announced, 7,
                "{step}: the completed certificates are announced"
            );
        }
        match step {
            // Intents recorded but nothing signed: the rerun completes them (7 signatures + CRL).
            "after-intent" => assert!(out.contains("completed 7"), "{step}: {out}"),
            // Signed in memory, lost with the crash: completed from the intents, same serials.
            "after-sign" => assert!(out.contains("completed 7"), "{step}: {out}"),
            // Records written: recovered into the index without signing again.
            "after-record" => {
                assert!(out.contains("completed 7"), "{step}: {out}");
                assert!(
                    out.contains("1 signature(s)"),
                    "{step}: only the CRL is signed: {out}"
                );
            }
            _ => assert!(
                out.contains("0 signature(s)") || out.contains("1 signature(s)"),
                "{step}: nothing re-signed: {out}"
            ),
        }
        assert_eq!(
            issued, 0,
            "{step}: the rerun issued new certificates: {out}"
        );
        assert_converged(&env, 7);
        // A third run is a no-op.
        let h = env.head();
        let out = env.ok(&["apply"], 3);
        assert!(
            out.contains("0 signature(s)") && out.contains("nothing to commit"),
            "{step}: {out}"
        );
        assert_eq!(env.head(), h);
    }
}

/// Issuance runs in rounds (intents, signatures, records per round; the index after the last).
/// A crash in the last round leaves earlier rounds recorded but not indexed and the last round
/// at any step: the rerun indexes the recorded certificates, signs only what has no record, and
/// issues nothing twice.
#[test]
fn a_crash_in_the_last_round_of_issuance_converges_without_double_issuance() {
    if !have("openssl") {
        return;
    }
    // Seven requests in rounds of 3, 3 and 1, each signing what the check before them built,
    // and in seven rounds of one, where only the first does and later rounds build again.
    for (chunk, rounds) in [("3", 3), ("1", 7)] {
        for (step, signed_again) in [("after-intent", 1), ("after-sign", 1), ("after-record", 0)] {
            crash_in_the_last_round_converges(chunk, rounds, step, signed_again);
        }
    }
}

fn crash_in_the_last_round_converges(chunk: &str, rounds: usize, step: &str, signed_again: usize) {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let o = env.gitca(&["apply", "--issue-chunk", chunk, "--fail-at", step]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "rounds of {chunk}, {step}: injected failure"
    );
    let records = recorded_serials(&env).len();
    assert_eq!(
        records,
        7 - 1 + (1 - signed_again),
        "rounds of {chunk}, {step}: records of the rounds done"
    );
    assert_eq!(
        state_files(&env, "intents").len(),
        rounds,
        "rounds of {chunk}, {step}: one intent object per round"
    );
    let out = env.ok(&["apply", "--issue-chunk", chunk], 3);
    assert!(
        out.contains("completed 7"),
        "rounds of {chunk}, {step}: {out}"
    );
    // The certificates left unsigned, then the CRL.
    assert!(
        out.contains(&format!("{} signature(s)", signed_again + 1)),
        "rounds of {chunk}, {step}: {out}"
    );
    assert_eq!(
        out.matches("\n  issue ").count(),
        0,
        "rounds of {chunk}, {step}: {out}"
    );
    assert_converged(&env, 7);
}

/// An intent object some of whose certificates were recorded (signed) and some not, as a run
/// whose signer failed part of a round leaves it: the recorded ones are indexed as they are, only
/// the others are signed.
#[test]
fn an_intent_object_partly_recorded_is_completed_without_signing_the_recorded_again() {
    if !have("openssl") {
        return;
    }
    let env = stopped_at("after-record");
    let rounds = state_paths(&env, "certs");
    assert_eq!(rounds.len(), 1, "one round object: {rounds:?}");
    let records = records_in(&rounds[0]);
    assert_eq!(records.len(), 7);
    // The round object as a signer that failed three signatures leaves it.
    let kept = &records[3..];
    std::fs::write(&rounds[0], serde_json::to_vec(kept).unwrap()).unwrap();
    let out = env.ok(&["apply"], 3);
    assert!(out.contains("completed 7"), "{out}");
    // The three unrecorded certificates, then the CRL.
    assert!(out.contains("4 signature(s)"), "{out}");
    assert_eq!(out.matches("\n  issue ").count(), 0, "{out}");
    assert_converged(&env, 7);
    let after = records_in(&rounds[0]);
    assert_eq!(&after[..4], kept, "a recorded certificate was signed again");
    assert_eq!(after.len(), 7);
}

/// Records one object per certificate (as gitca wrote them before a round's records shared one
/// object), beside a round object holding the others: recovery indexes both without signing,
/// and the state is read from both (the outputs, `verify`, `status`).
#[tokio::test(flavor = "multi_thread")]
async fn records_left_one_per_certificate_are_indexed_beside_a_round() {
    use gitca::adapters::state_store::{DirStore, StateStore};
    use gitca::domain::state::record_key;
    if !have("openssl") {
        return;
    }
    let env = stopped_at("after-record");
    let rounds = state_paths(&env, "certs");
    let records = records_in(&rounds[0]);
    std::fs::write(&rounds[0], serde_json::to_vec(&records[3..]).unwrap()).unwrap();
    let store = DirStore::open(&env.state("example-ca")).unwrap();
    for r in &records[..3] {
        let key = record_key(r["serial"].as_str().unwrap());
        store
            .put_new(&key, &serde_json::to_vec(r).unwrap())
            .await
            .unwrap();
    }
    let out = env.ok(&["apply"], 3);
    assert!(out.contains("completed 7"), "{out}");
    assert!(
        out.contains("1 signature(s)"),
        "only the CRL is signed: {out}"
    );
    assert_converged(&env, 7);
    let idx = env.index("example-ca");
    let own = |r: &serde_json::Value| idx["certs"][r["serial"].as_str().unwrap()]["round"].clone();
    assert!(records[..3].iter().all(|r| own(r).is_null()), "{idx}");
    assert!(records[3..].iter().all(|r| own(r).is_string()), "{idx}");
    // Every output is written again from the state, from both kinds of record.
    std::fs::remove_dir_all(env.path("issued")).unwrap();
    env.commit_all("drop the outputs");
    env.ok(&["apply"], 3);
    assert_eq!(leaf_files(&env.path("issued")).len(), 7);
    env.ok(&["verify"], 0);
    // Superseded certificates are described from their records.
    env.edit("requests/servers/web-01.yaml", |y| {
        format!("{y}\n# changed\n")
    });
    env.commit_all("change web-01");
    env.ok(&["apply"], 3);
    let status = env.ok(&["status", "--format", "json"], 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&status).unwrap();
    assert_eq!(rows.len(), 8, "{status}");
    let superseded: Vec<_> = rows.iter().filter(|r| r["current"] == false).collect();
    assert_eq!(superseded.len(), 1, "{status}");
    assert_eq!(superseded[0]["request"], "requests/servers/web-01.yaml");
    assert!(
        superseded[0]["sans"]
            .as_array()
            .is_some_and(|s| s.contains(&"web-01.internal.example.com".into())),
        "{status}"
    );
}

/// Intents left one object per certificate (as gitca wrote them before a round shared one
/// object) are completed all the same.
#[tokio::test(flavor = "multi_thread")]
async fn intents_left_one_per_certificate_are_completed() {
    use gitca::adapters::state_store::{DirStore, StateStore};
    use gitca::domain::state::{intent_key, intents_of};
    if !have("openssl") {
        return;
    }
    let env = stopped_at("after-intent");
    let store = DirStore::open(&env.state("example-ca")).unwrap();
    let rounds = store.list("intents/").await.unwrap();
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    let round = store.get(&rounds[0]).await.unwrap().unwrap();
    // The round is named by its first serial, as that certificate's own intent would be.
    store.delete_if(&rounds[0], &round.version).await.unwrap();
    for rec in intents_of(&round.bytes).unwrap() {
        let one = serde_json::to_vec(&rec).unwrap();
        store.put_new(&intent_key(&rec.serial), &one).await.unwrap();
    }
    assert_eq!(state_files(&env, "intents").len(), 7);
    let out = env.ok(&["apply"], 3);
    assert!(out.contains("completed 7"), "{out}");
    assert_eq!(out.matches("\n  issue ").count(), 0, "{out}");
    assert_converged(&env, 7);
}

/// The rerun after a crash with seven intents, one of which it must not sign: six completed,
/// one kept under `abandoned/`, and every request issued.
fn rerun_completes_six_and_drops_one(env: &Env) {
    let out = env.ok(&["apply"], 3);
    assert!(out.contains("completed 6 and dropped 1"), "{out}");
    assert_converged(env, 7);
    assert_eq!(
        std::fs::read_dir(env.state("example-ca").join("abandoned"))
            .unwrap()
            .count(),
        1
    );
}

/// An intent whose request changed before the rerun is dropped unsigned; the new version is issued.
#[test]
fn an_intent_for_a_changed_request_is_abandoned() {
    let env = stopped_at("after-intent");
    env.edit("requests/servers/web-01.yaml", |y| {
        format!("{y}\n# changed\n")
    });
    env.commit_all("change web-01");
    rerun_completes_six_and_drops_one(&env);
}

/// Defect `intent-profile-changed`: a policy changed between the crash and the rerun (here a
/// default lifetime) makes the recorded TBS fail today's profile check. That stopped every
/// apply, and with it every CRL refresh, until someone deleted the intents by hand. Such an
/// intent is now dropped unsigned, like one whose request changed, and the request issued anew.
#[test]
fn an_intent_whose_policy_changed_is_abandoned() {
    let env = stopped_at("after-intent");
    env.edit("policies/spiffe.yaml", |y| {
        y.replace("default_lifetime: 1d", "default_lifetime: 2d")
    });
    env.commit_all("spiffe certificates last two days");
    rerun_completes_six_and_drops_one(&env);
}

/// Defect `intent-algorithm-mismatch` (found by review): an intent's TBS naming another
/// signature algorithm than the signer's passed the recovery's lint and was completed with the
/// signer's outer algorithm, a certificate RFC 5280 4.1.1.2 forbids and OpenSSL rejects. Such
/// an intent is dropped unsigned.
#[tokio::test(flavor = "multi_thread")]
async fn an_intent_naming_another_signature_algorithm_is_abandoned() {
    use base64ct::{Base64, Encoding};
    use gitca::adapters::state_store::{DirStore, StateStore};
    use gitca::domain::state::intents_of;
    let env = stopped_at("after-intent");
    let store = DirStore::open(&env.state("example-ca")).unwrap();
    let rounds = store.list("intents/").await.unwrap();
    let round = store.get(&rounds[0]).await.unwrap().unwrap();
    let mut recs = intents_of(&round.bytes).unwrap();
    // ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the TBS's first OID, becomes ecdsa-with-SHA384.
    let sha256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    let mut tbs = Base64::decode_vec(&recs[0].tbs).unwrap();
    let at = tbs.windows(10).position(|w| w == sha256).unwrap();
    tbs[at + 9] = 0x03;
    recs[0].tbs = Base64::encode_string(&tbs);
    let bytes = serde_json::to_vec(&recs).unwrap();
    store
        .put_if(&rounds[0], &bytes, &round.version)
        .await
        .unwrap();
    rerun_completes_six_and_drops_one(&env);
}

/// Defect `intent-urls-changed` (found by review): gitca.yaml's CRL and CA-issuers URLs moved
/// between the crash and the rerun; the recorded intents were signed with the old URLs, and
/// the plan then called those certificates unchanged until their renewal. They are dropped
/// unsigned, and the requests issued with the URLs configured now.
#[test]
fn an_intent_with_urls_no_longer_configured_is_abandoned() {
    let env = stopped_at("after-intent");
    env.edit("gitca.yaml", |y| {
        y.replace("http://pki.example.com/", "http://new-pki.example.com/")
    });
    env.commit_all("the PKI moves");
    let out = env.ok(&["apply"], 3);
    assert!(out.contains("completed 0 and dropped 7"), "{out}");
    assert_converged(&env, 7);
    if have("openssl") {
        let o = std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-ext",
                "crlDistributionPoints,authorityInfoAccess",
                "-in",
            ])
            .arg(env.path("issued/servers/web-01.pem"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(text.matches("new-pki.example.com").count(), 2, "{text}");
    }
}

/// Defect `intent-signed-stale`: a rerun a day after the crash signed the 1-day SPIFFE
/// certificate's intent as recorded, expired already, and then renewed it in the same run: two
/// certificates for one request. An intent due for renewal by the rerun is dropped unsigned.
#[test]
fn an_intent_due_for_renewal_by_the_rerun_is_abandoned() {
    let env = stopped_at("after-intent");
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(25);
    let later = later
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let out = env.ok(&["apply", "--now", &later], 3);
    assert!(out.contains("completed 6 and dropped 1"), "{out}");
    let idx = env.index("example-ca");
    let spiffe: Vec<_> = (idx["certs"].as_object().unwrap().values())
        .filter(|c| c["request_id"] == "requests/workloads/payments-api.yaml")
        .collect();
    assert_eq!(spiffe.len(), 1, "one certificate: {spiffe:?}");
    assert!(spiffe[0]["not_after"].as_str().unwrap() > later.as_str());
}

/// Defect `lease-outlived`: an apply still running after its lease's time to live lost the
/// lease to the next apply, which then planned the same requests and issued them a second
/// time. The holder now renews its lease while it runs, so the next apply waits for it.
#[test]
fn an_apply_running_past_its_lease_time_keeps_the_lease() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let mut running = env
        .command_in(
            &env.repo,
            &["apply", "--hang-at", "after-sign", "--lease-ttl", "2s"],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while state_paths(&env, "intents").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first apply never recorded its intents"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Twice its time to live: a lease taken once and never renewed has expired by now.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let o = env.gitca(&["apply", "--lease-wait", "0s"]);
    running.kill().unwrap();
    running.wait().unwrap();
    assert_eq!(o.status.code(), Some(1), "the holder is still running");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another apply holds the lease"), "{err}");
    // Killed, it renews no more: once the lease expires, the next apply completes its round.
    let out = env.ok(&["apply", "--lease-wait", "60s"], 3);
    assert!(out.contains("completed 7"), "{out}");
    assert_converged(&env, 7);
}

#[test]
fn history_rewrite_is_refused_unless_allowed() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    // Rewrite: a new root commit with the same content replaces the branch.
    let tree = env.git(&["rev-parse", "HEAD^{tree}"]);
    let orphan = env.git(&["commit-tree", tree.trim(), "-m", "rewritten"]);
    env.git(&["reset", "-q", "--hard", orphan.trim()]);
    let o = env.gitca(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("history was rewritten") && err.contains("--allow-history-rewrite"),
        "{err}"
    );
    env.ok(&["apply", "--allow-history-rewrite"], 3);
    env.ok(&["apply"], 3);
}

/// The example repository with a bare remote it pushes to, and a second clone of that remote
/// (its path), from which someone else pushes.
fn with_a_second_clone() -> (Env, std::path::PathBuf) {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let remote = env.bare_remote();
    let other = env.tmp().join("other");
    let (remote, path) = (remote.to_str().unwrap(), other.to_str().unwrap());
    git_in(env.tmp(), &["clone", "-q", remote, path]);
    git_in(&other, &["config", "user.name", "Other"]);
    git_in(&other, &["config", "user.email", "other@example.com"]);
    (env, other)
}

/// Defect `push-retry-overwrites-edits`: after the remote moved, apply --push checked the
/// remote's branch out by force, overwriting uncommitted edits anywhere in the work tree. Now
/// git moves it (`reset --keep`): an edit the remote did not touch is kept and the retry goes
/// on; one the remote's commit would overwrite stops the run, and is kept too.
#[test]
fn a_push_retry_does_not_check_out_over_uncommitted_edits() {
    let (env, other) = with_a_second_clone();
    std::fs::write(other.join("NOTES.md"), "moved on\n").unwrap();
    std::fs::write(other.join("policies/README.md"), "theirs\n").unwrap();
    git_in(&other, &["add", "-A"]);
    git_in(&other, &["commit", "-q", "-m", "the remote moves"]);
    git_in(&other, &["push", "-q"]);
    let edited = format!("{}# being edited\n", env.read("policies/spiffe.yaml"));
    std::fs::write(env.path("policies/spiffe.yaml"), &edited).unwrap();
    let out = env.ok(&["apply", "--push"], 3);
    assert!(out.contains("pushed"), "{out}");
    assert_eq!(env.read("policies/spiffe.yaml"), edited, "the edit is kept");

    // The remote changes the file being edited here: the retry stops, the edit stays.
    std::fs::write(other.join("NOTES.md"), "moved again\n").unwrap();
    git_in(&other, &["pull", "-q"]);
    git_in(&other, &["commit", "-q", "-am", "notes"]);
    git_in(&other, &["push", "-q"]);
    std::fs::write(env.path("NOTES.md"), "mine\n").unwrap();
    let o = env.gitca(&["apply", "--push"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("git reset --keep"), "{err}");
    assert_eq!(env.read("NOTES.md"), "mine\n", "the edit is kept");
}

/// Defect `push-retry-signs-for-a-rotated-ca`: the remote moved to a new CA (another name,
/// so another state folder, and a new key) while an apply --push ran; its retry re-planned on
/// the new head and signed certificates naming the new CA with the old CA's key, in a state it
/// held no lease on, and pushed them. The retry now refuses, and nothing is pushed.
#[test]
fn a_push_retry_onto_a_rotated_ca_signs_nothing() {
    let (env, other) = with_a_second_clone();
    let cfg = std::fs::read_to_string(other.join("gitca.yaml")).unwrap();
    std::fs::write(
        other.join("gitca.yaml"),
        cfg.replace("name: example-ca", "name: rotated-ca"),
    )
    .unwrap();
    git_in(&other, &["rm", "-q", "ca/issuing-ca.pem", "ca/root-ca.pem"]);
    git_in(&other, &["commit", "-q", "-am", "a new CA"]);
    let o = env.gitca_in(&other, &["init"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    git_in(&other, &["push", "-q"]);
    let theirs = git_in(&other, &["rev-parse", "HEAD"]);

    let o = env.gitca(&["apply", "--push"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("changed in a commit that landed"), "{err}");
    git_in(&other, &["fetch", "-q"]);
    assert_eq!(
        git_in(&other, &["rev-parse", "origin/main"]),
        theirs,
        "nothing pushed"
    );
    assert!(
        !env.data.join("rotated-ca/state/index.json").exists(),
        "nothing recorded there"
    );
}

/// Found by review: `apply --push` signed a local commit the remote did not hold, unreviewed,
/// then pushed it; or, when the remote had moved, signed it and dropped it in the retry. It now
/// refuses before signing, naming the commits.
#[test]
fn apply_push_refuses_a_commit_the_remote_does_not_hold() {
    let (env, _other) = with_a_second_clone();
    let y = env.read("requests/servers/web-01.yaml");
    std::fs::write(
        env.path("requests/servers/web-01.yaml"),
        format!("{y}# renew\n"),
    )
    .unwrap();
    let local = env.commit_all("change web-01, not pushed");
    let o = env.gitca(&["apply", "--push"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("signs only what the remote holds") && err.contains(&local[..12]),
        "{err}"
    );
    assert!(!env.path("issued").exists(), "nothing signed or written");
    assert_eq!(env.head(), local);
    // Pushed (as a merge would), it is applied.
    env.git(&["push", "-q"]);
    let out = env.ok(&["apply", "--push"], 3);
    assert!(out.contains("pushed"), "{out}");

    // The read of this change: an outputs commit left unpushed (a run without --push here, a
    // failed push elsewhere) changes nothing signed; it is pushed by the next run, not refused
    // (refused, every later --push run stopped, a cron's `crl --push` too).
    let y = env.read("requests/servers/web-01.yaml");
    std::fs::write(
        env.path("requests/servers/web-01.yaml"),
        format!("{y}# again\n"),
    )
    .unwrap();
    env.commit_all("change web-01 again");
    env.git(&["push", "-q"]);
    env.ok(&["apply"], 3);
    let outputs = env.head();
    env.ok(&["crl", "--force", "--push"], 0);
    env.git(&["fetch", "-q"]);
    let remote = env.git(&["rev-parse", "origin/main"]);
    assert_eq!(remote.trim(), env.head().trim(), "all pushed");
    assert_ne!(
        remote.trim(),
        outputs.trim(),
        "the CRL committed after the outputs"
    );
    env.git(&["merge-base", "--is-ancestor", outputs.trim(), "origin/main"]);
}

#[test]
fn push_race_against_a_bare_remote_is_retried() {
    // Someone else pushes a new request meanwhile.
    let (env, other) = with_a_second_clone();
    std::fs::copy(
        other.join("requests/servers/web-01.csr.pem"),
        other.join("requests/servers/late.csr.pem"),
    )
    .unwrap();
    std::fs::write(other.join("requests/servers/late.yaml"), "csr: late.csr.pem\nsans: {dns: [late.internal.example.com]}\nsubject: {common_name: late.internal.example.com}\n").unwrap();
    git_in(&other, &["add", "-A"]);
    git_in(&other, &["commit", "-q", "-m", "late request"]);
    git_in(&other, &["push", "-q"]);

    // Our apply commits on the old head, the push is rejected, it re-plans on the new head.
    let out = env.ok(&["apply", "--push"], 3);
    assert!(out.contains("pushed"), "{out}");
    git_in(&other, &["pull", "-q"]);
    assert!(other.join("issued/servers/web-01.pem").exists());
    // The late request reuses web-01's key: rejected with key-reuse, and nothing was lost.
    let idx = env.index("example-ca");
    let n = idx["certs"].as_object().unwrap().len();
    assert_eq!(n, 7, "no double issuance across the retry: {out}");
    let log = git_in(&other, &["log", "--format=%s"]);
    assert!(log.lines().next().unwrap().starts_with("gitca:"), "{log}");
    assert!(log.contains("late request"));
}

/// An output's git object missing from the repository (a damaged object store): the run says
/// which file it could not read and writes it again from the state, which restores the object.
#[test]
fn an_output_blob_missing_from_git_is_reported_and_written_again() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    env.ok(&["apply", "--now", "2026-12-01T00:00:00Z"], 3);
    let leaf = "issued/servers/web-01.pem";
    let blob = env.git(&["rev-parse", &format!("HEAD:{leaf}")]);
    let blob = blob.trim();
    let object = env.path(&format!(".git/objects/{}/{}", &blob[..2], &blob[2..]));
    std::fs::remove_file(&object).expect("the blob is a loose object");
    let o = env.gitca(&["apply", "--full-scan", "--now", "2026-12-01T01:00:00Z"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        matches!(o.status.code(), Some(0) | Some(3)),
        "{err}{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.contains(leaf) && err.contains("cannot read blob"),
        "the damaged file is named: {err}"
    );
    env.git(&["cat-file", "-e", blob]);
    env.ok(&["verify"], 0);
}

/// An issuance in rounds, each round's records written while the next round is signed: every
/// request is issued once and reported in the plan's order, every round is recorded as one
/// object, and the state, the repository and `gitca verify` agree.
#[test]
fn an_issuance_in_many_rounds_records_every_round_and_issues_each_request_once() {
    if !have("openssl") {
        return;
    }
    for (chunk, rounds) in [("1", 7), ("2", 4), ("3", 3)] {
        let env = Env::from(EXAMPLE, &["revocations.yaml"]);
        env.init(&[]);
        let out = env.ok(&["apply", "--issue-chunk", chunk, "--format", "json"], 3);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let ids: Vec<&str> = (v["issued"].as_array().unwrap().iter())
            .map(|i| i["request_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 7, "rounds of {chunk}: {ids:?}");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "rounds of {chunk}: in the plan's order: {ids:?}"
        );
        assert_eq!(
            state_paths(&env, "certs").len(),
            rounds,
            "rounds of {chunk}: one records object per round"
        );
        assert_converged(&env, 7);
        env.ok(&["verify"], 0);
    }
}

/// A run killed while a round's records are written beside the next round: the next round's
/// intents are recorded (and it may be signed), and the round after's intents written while it
/// is, while the write of the first round's records has not landed. Three rounds' intents are
/// left without records. The rerun completes them from their intents, with their serials,
/// issues the rest, and issues no request twice.
#[test]
fn a_kill_while_a_round_is_recorded_beside_the_next_converges_without_double_issuance() {
    if !have("openssl") {
        return;
    }
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let head = env.head();
    // Rounds of 2, 2, 2 and 1: the first round's write hangs; the second round's intents are
    // awaited, the third's written while the second is signed, and the run then waits for ever
    // for the first round's records. The fourth round is never started.
    let args = [
        "apply",
        "--issue-chunk",
        "2",
        "--hang-at",
        "beside-record",
        "--lease-ttl",
        "2s",
    ];
    let mut run = Started(
        env.command_in(&env.repo, &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while state_files(&env, "intents").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the third round's intents were never recorded: {:?}",
            state_files(&env, "intents")
        );
        assert!(
            run.0.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    assert_eq!(
        state_files(&env, "intents").len(),
        3,
        "three rounds' intents"
    );
    assert!(
        state_paths(&env, "certs").is_empty(),
        "no round was recorded: {:?}",
        state_paths(&env, "certs")
    );
    assert_eq!(env.head(), head, "nothing committed by the killed run");

    // The three rounds completed; the request of the round never started issued anew.
    rerun_converges(&env, &["apply", "--lease-wait", "60s"], 6, 1);
}

/// The write of a round's records beside the next round fails: the run fails with that error
/// (before the next round's signatures if the write has ended by then; after them otherwise,
/// with that round still recorded and the intents of the round after written meanwhile), and
/// the rerun completes what is left, each request once.
#[test]
fn a_failed_write_of_a_round_recorded_beside_the_next_fails_the_run_and_converges() {
    if !have("openssl") {
        return;
    }
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let head = env.head();
    // Rounds of 2, 2, 2 and 1.
    let o = env.gitca(&["apply", "--issue-chunk", "2", "--fail-at", "beside-record"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("injected failure at BesideRecord"), "{err}");
    assert_eq!(env.head(), head, "nothing committed by the failed run");
    // The first round's records failed. Found before the second round was signed, nothing
    // more was written; found after, the second round was recorded, and the third round's
    // intents were written meanwhile. The fourth never started.
    let recorded = state_paths(&env, "certs").len();
    let intents = state_files(&env, "intents").len();
    assert!(
        (recorded, intents) == (0, 2) || (recorded, intents) == (1, 3),
        "records {recorded}, intents {intents}"
    );

    rerun_converges(&env, &["apply"], 2 * intents, 7 - 2 * intents);
}

/// The write of a round's intents beside the round before fails: the run stops before that
/// round is signed, once the round before is recorded, and the rerun indexes the recorded round
/// and issues the rest, each request once.
#[test]
fn a_failed_write_of_a_round_s_intents_beside_the_round_before_stops_before_its_signatures() {
    if !have("openssl") {
        return;
    }
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    // Rounds of 2, 2, 2 and 1: the second round's intents fail while the first is signed.
    let o = env.gitca(&["apply", "--issue-chunk", "2", "--fail-at", "beside-intent"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("injected failure at BesideIntent"), "{err}");
    assert_eq!(state_files(&env, "intents").len(), 1, "the first round's");
    assert_eq!(
        state_paths(&env, "certs").len(),
        1,
        "the first round recorded"
    );

    // The first round recorded; the rest issued.
    rerun_converges(&env, &["apply"], 2, 5);
}

/// The rerun of the example CA after a stopped run (`args`): `completed` requests completed from
/// the state the stopped run left, `issued` issued anew, every request once, and `gitca verify`
/// agrees.
fn rerun_converges(env: &Env, args: &[&str], completed: usize, issued: usize) {
    let out = env.ok(args, 3);
    assert!(out.contains(&format!("completed {completed}")), "{out}");
    assert_eq!(out.matches("\n  issue ").count(), issued, "{out}");
    assert_converged(env, 7);
    env.ok(&["verify"], 0);
}

/// Defect found by review: push, fetch and the retry's reset ran git with the caller's
/// environment, so under a GIT_DIR of another repository (a hook's) `apply --push` said
/// "pushed" while pushing that one. They run on gitca's repository now.
#[test]
fn apply_push_under_another_git_dir_pushes_this_repository() {
    let (env, other) = with_a_second_clone();
    let out = env
        .command_in(&env.path(""), &["apply", "--push"])
        .env("GIT_DIR", other.join(".git"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pushed"));
    git_in(&other, &["pull", "-q"]);
    assert!(other.join("issued/servers/web-01.pem").exists());
}

/// Defect found by review: with `core.autocrlf` and `core.safecrlf` set, `git update-index`
/// refused gitca's LF outputs ("LF would be replaced by CRLF") after they were signed and
/// recorded, on every run: certificates issued and never committed. gitca's own git commands
/// store what gitca wrote, as it wrote it.
#[test]
fn outputs_are_committed_under_core_safecrlf() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    env.git(&["config", "core.autocrlf", "true"]);
    env.git(&["config", "core.safecrlf", "true"]);
    let before = env.head();
    env.ok(&["apply"], 3);
    assert_ne!(env.head(), before, "the outputs are committed");
    let committed = env.git(&["show", "HEAD:issued/servers/web-01.pem"]);
    assert!(
        committed.starts_with("-----BEGIN CERTIFICATE-----\n"),
        "{committed}"
    );
    assert!(!committed.contains('\r'));
    env.ok(&["verify"], 0);
    assert_eq!(env.git(&["status", "--porcelain"]), "");
}

/// Found by the review of the git adapter: the outputs commit went to whichever branch was
/// checked out when the run finished (a `git switch -c` meanwhile got it), and the git commands
/// gitca runs wrote blobs into the object store a caller's GIT_OBJECT_DIRECTORY named.
#[cfg(unix)]
#[test]
fn the_outputs_commit_goes_to_the_branch_it_was_made_for_in_this_repository() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let head = env.head();
    // A git on PATH that switches to a new branch once gitca has staged its outputs.
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let wrap = env.tmp().join("wrap");
    std::fs::create_dir_all(&wrap).unwrap();
    let script = format!(
        "#!/bin/sh\n{real} \"$@\"; rc=$?\ncase \"$*\" in *update-index*) {real} switch -q -c feature ;; esac\nexit $rc\n",
        real = real.trim()
    );
    std::fs::write(wrap.join("git"), script).unwrap();
    std::fs::set_permissions(wrap.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", wrap.display(), std::env::var("PATH").unwrap());
    let o = env
        .command_in(&env.repo, &["apply"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was checked out while gitca committed"),
        "{err}"
    );
    assert_eq!(
        env.git(&["rev-parse", "feature"]).trim(),
        head.trim(),
        "feature not moved"
    );
    // Nothing left staged for the next `git commit` here to take.
    let staged = env.git(&["diff", "--cached", "--name-only"]);
    assert!(staged.trim().is_empty(), "{staged}");
    env.git(&["switch", "-q", "main"]);
    env.ok(&["apply"], 3);

    // Blobs go to this repository's object store, whatever GIT_OBJECT_DIRECTORY says.
    let other = env.tmp().join("other.git");
    git_in(
        env.tmp(),
        &["init", "-q", "--bare", other.to_str().unwrap()],
    );
    let objects = |dir: &std::path::Path| {
        walkdir::WalkDir::new(dir.join("objects"))
            .into_iter()
            .count()
    };
    let before = objects(&other);
    let y = env.read("requests/servers/web-01.yaml");
    std::fs::write(
        env.path("requests/servers/web-01.yaml"),
        format!("{y}# renew\n"),
    )
    .unwrap();
    env.commit_all("reissue web-01");
    let o = env
        .command_in(&env.repo, &["apply"])
        .env("GIT_OBJECT_DIRECTORY", other.join("objects"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        objects(&other),
        before,
        "nothing written into the other repository"
    );
    git_in(&env.repo, &["fsck", "--strict"]);
}
