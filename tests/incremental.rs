//! Incremental reconciles plan exactly what a full scan plans. Through a sequence of changes
//! (none, an edited request, a replaced CSR, a deleted and an added request, a key taken from an
//! unchanged request, renewals coming due, a hand-edited output, a policy change), every
//! `apply` (incremental when it can be) is compared with `plan` (always a full scan) at the
//! same instant; the scan it reports shows that it really was incremental; and `gitca verify`
//! finds the repository consistent after each step.

mod common;
use common::*;
use serde_json::Value;

/// What a plan decides, without the parts that are presentation only.
fn decisions(plan: &Value) -> Value {
    let requests: Vec<Value> = plan["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let codes: Vec<&str> = r["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| f["code"].as_str().unwrap())
                .collect();
            serde_json::json!({
                "id": r["id"], "action": r["action"], "serial": r["serial"],
                "policy": r["policy"], "codes": codes, "supersede": r["supersede"],
                "no_longer_allowed": r["live_certificate_no_longer_allowed"],
            })
        })
        .collect();
    serde_json::json!({
        "requests": requests,
        "orphans": plan["orphans"],
        "revocations": plan["revocations"],
        "crl_due": plan["crl_due"].is_string(),
    })
}

/// Plans in full and applies (incrementally when possible) at the same instant; asserts both
/// decide the same; returns the apply's JSON. The full plan runs on one thread and the apply
/// on four: the decisions must not depend on the thread count either.
fn step(env: &Env, at: &str) -> Value {
    let o = env
        .command_in(&env.repo, &["plan", "--format", "json", "--at", at])
        .env("GITCA_THREADS", "1")
        .output()
        .unwrap();
    let full: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("plan: {e}: {}", String::from_utf8_lossy(&o.stderr));
    });
    let o = env
        .command_in(&env.repo, &["apply", "--format", "json", "--now", at])
        .env("GITCA_THREADS", "4")
        .output()
        .unwrap();
    assert!(
        matches!(o.status.code(), Some(0) | Some(3)),
        "apply: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let applied: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        decisions(&applied["plan"]),
        decisions(&full),
        "incremental and full plans differ at {at} (scan {})",
        applied["scan"]
    );
    // gitca updated the work tree and the index for exactly what it committed.
    assert_eq!(
        env.git(&["status", "--porcelain"]),
        "",
        "work tree clean after apply"
    );
    let v = env.gitca(&["verify", "--now", at]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "verify after apply at {at}: {}",
        String::from_utf8_lossy(&v.stdout)
    );
    applied
}

fn scan(applied: &Value) -> (&str, u64, u64) {
    let s = &applied["scan"];
    (
        s["kind"].as_str().unwrap(),
        s["read"].as_u64().unwrap(),
        s["carried"].as_u64().unwrap(),
    )
}

/// The request ids an apply issued for.
fn issued(applied: &Value) -> Vec<&str> {
    applied["issued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect()
}

fn requests(applied: &Value) -> u64 {
    applied["plan"]["requests"].as_array().unwrap().len() as u64
}

#[test]
fn incremental_plans_equal_full_plans_through_a_sequence_of_changes() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    let day = |d: u32| format!("2026-12-{d:02}T00:00:00Z");

    // First apply: no basis yet, so a full scan.
    let a = step(&env, &day(1));
    assert_eq!(scan(&a).0, "full");
    assert!(
        a["scan"]["reason"].as_str().unwrap().contains("basis"),
        "{a}"
    );

    // Nothing changed: only the rejected and the revoked requests are read again.
    let a = step(&env, &day(2));
    let (kind, read, carried) = scan(&a);
    assert_eq!(kind, "incremental", "{a}");
    let actions: Vec<String> = a["plan"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["id"], r["action"]))
        .collect();
    // Read: the rejected request, the one blocked by a revocation, the short-lived SVID due again.
    assert!(carried >= 4 && read <= 3, "{} {actions:?}", a["scan"]);
    assert_eq!(read + carried, requests(&a));
    assert!(
        issued(&a)
            .iter()
            .all(|i| *i == "requests/workloads/payments-api.yaml"),
        "only the SVID renews: {}",
        a["issued"]
    );

    // An edited request is read and reissued; the rest stay carried.
    env.edit("requests/servers/api.yaml", |y| {
        y.replace("lifetime: 90d", "lifetime: 60d")
    });
    env.commit_all("shorter api lifetime");
    let a = step(&env, &day(3));
    assert_eq!(scan(&a).0, "incremental");
    let reissued = issued(&a);
    assert!(
        reissued.contains(&"requests/servers/api.yaml"),
        "{reissued:?}"
    );
    assert!(
        reissued
            .iter()
            .all(|i| *i == "requests/servers/api.yaml" || i.ends_with("payments-api.yaml")),
        "{reissued:?}"
    );

    // A CSR replaced under an unchanged request file: the request is read (found through the
    // CSR path recorded in the basis) and reissued.
    if have("openssl") {
        new_p256_csr(
            &env.path("requests/servers/db-01.csr.pem"),
            "db-01.internal.example.com",
        );
        env.commit_all("db-01 new key");
        let a = step(&env, &day(4));
        assert_eq!(scan(&a).0, "incremental");
        assert!(issued(&a).contains(&"requests/servers/db-01.yaml"), "{a}");
    }

    // A deleted request becomes an orphan; a new request taking an unchanged request's key is
    // refused (key-reuse) while the owner stays unchanged.
    std::fs::remove_file(env.path("requests/clients/ci-runner.yaml")).unwrap();
    std::fs::copy(
        env.path("requests/servers/web-01.csr.pem"),
        env.path("requests/servers/web-02.csr.pem"),
    )
    .unwrap();
    std::fs::write(
        env.path("requests/servers/web-02.yaml"),
        "csr: web-02.csr.pem\nsans: {dns: [web-01.internal.example.com]}\n",
    )
    .unwrap();
    env.commit_all("remove ci-runner, add web-02 with web-01's key");
    let a = step(&env, &day(5));
    assert_eq!(scan(&a).0, "incremental");
    assert_eq!(
        a["plan"]["orphans"][0]["request_id"],
        "requests/clients/ci-runner.yaml"
    );
    let web02 = plan_request(&a["plan"], "requests/servers/web-02.yaml");
    assert_eq!(web02["findings"][0]["code"], "key-reuse", "{web02}");
    assert!(!env.path("issued/clients/ci-runner.pem").exists());

    // A hand-edited output is put back (the output folder no longer matches the basis).
    std::fs::write(env.path("issued/servers/web-01.pem"), "tampered\n").unwrap();
    env.commit_all("hand edit");
    let a = step(&env, &day(6));
    assert_eq!(scan(&a).0, "incremental");
    assert!(
        env.read("issued/servers/web-01.pem")
            .contains("BEGIN CERTIFICATE")
    );

    // Weeks later, renewals come due: those requests are read and renewed, in both plans.
    let a = step(&env, "2027-01-25T00:00:00Z");
    assert_eq!(scan(&a).0, "incremental");
    assert!(
        a["plan"]["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "renew"),
        "{}",
        a["plan"]
    );

    // A policy change is global: everything is planned in full.
    env.edit("policies/internal-tls.yaml", |p| {
        p.replace("max_lifetime: 90d", "max_lifetime: 45d")
    });
    env.commit_all("tighter policy");
    let a = step(&env, "2027-01-26T00:00:00Z");
    assert_eq!(scan(&a).0, "full");
    assert!(
        a["scan"]["reason"]
            .as_str()
            .unwrap()
            .contains("policies/internal-tls.yaml")
    );
    // And the next run is incremental again, with the same decisions.
    let a = step(&env, "2027-01-27T00:00:00Z");
    assert_eq!(scan(&a).0, "incremental");

    // `--full-scan` reads everything, and agrees.
    let (planned, _) = env.plan_json(&["--at", "2027-01-27T00:00:00Z"]);
    let o = env.ok(
        &[
            "apply",
            "--format",
            "json",
            "--full-scan",
            "--now",
            "2027-01-27T00:00:00Z",
        ],
        3,
    );
    let full: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(scan(&full).0, "full");
    assert_eq!(decisions(&full["plan"]), decisions(&planned));
}

/// Like a safe checkout, apply refuses to overwrite an output file with uncommitted changes in
/// the work tree, and refuses before writing anything.
#[test]
fn uncommitted_changes_to_outputs_are_not_overwritten() {
    let env = issued_then_web01_shortened();
    std::fs::write(env.path("issued/servers/web-01.pem"), "my local edit\n").unwrap();
    let chain_before = env.read("issued/servers/web-01.chain.pem");
    refused(
        env.gitca(&["apply", "--now", "2026-12-02T00:00:00Z"]),
        &["issued/servers/web-01.pem", "uncommitted"],
    );
    assert_eq!(env.read("issued/servers/web-01.pem"), "my local edit\n");
    assert_eq!(env.read("issued/servers/web-01.chain.pem"), chain_before);
}

/// gitca never writes through a symbolic link or other non-folder on an output's way (a link
/// could point outside the work tree), also where the folder is new to the repository; it
/// refuses before writing anything, and the rerun once it is gone converges.
#[test]
fn outputs_are_not_written_through_a_link_or_file_in_place_of_a_folder() {
    for link in [true, false] {
        let env = Env::from(EXAMPLE, &[]);
        env.init(&[]);
        let head = env.head();
        let outside = env.tmp().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(env.path("issued")).unwrap();
        let in_place = env.path("issued/workloads");
        if link {
            std::os::unix::fs::symlink(&outside, &in_place).unwrap();
        } else {
            std::fs::write(&in_place, "not a folder\n").unwrap();
        }
        refused(
            env.gitca(&["apply", "--now", "2026-12-01T00:00:00Z"]),
            &["issued/workloads", "not a plain folder"],
        );
        assert_eq!(env.head(), head, "no branch moved");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
        let untracked = env.git(&["status", "--porcelain", "--untracked-files=all"]);
        assert_eq!(
            untracked.trim(),
            "?? issued/workloads",
            "nothing else written"
        );

        std::fs::remove_file(&in_place).unwrap();
        env.ok(&["apply", "--now", "2026-12-01T00:00:00Z"], 3);
        assert_ne!(env.head(), head);
        assert!(env.path("issued/workloads/payments-api.pem").is_file());
        assert!(
            env.git(&["status", "--porcelain"]).trim().is_empty(),
            "work tree clean"
        );
    }
}

/// The index update after the outputs commit runs the git command. Without it the apply fails
/// naming what is missing, moves no branch and writes no file, and the rerun (with git)
/// converges.
#[test]
fn an_apply_without_the_git_command_fails_clearly_and_its_rerun_converges() {
    // The new request's CSR is made with openssl.
    if !have("openssl") {
        return;
    }
    let env = issued_then_web01_shortened();
    // And a new request: its files would be new in the work tree, not replacements.
    new_p256_csr(
        &env.path("requests/servers/db-02.csr.pem"),
        "db-02.internal.example.com",
    );
    std::fs::write(
        env.path("requests/servers/db-02.yaml"),
        "csr: db-02.csr.pem\nusages: [server_auth]\nsans: {dns: [db-02.internal.example.com]}\n",
    )
    .unwrap();
    env.commit_all("db-02");
    let head = env.head();
    let no_git = env.tmp().join("no-git-bin");
    std::fs::create_dir_all(&no_git).unwrap();
    let o = env
        .command_in(&env.path(""), &["apply", "--now", "2026-12-02T00:00:00Z"])
        .env("PATH", &no_git)
        .output()
        .unwrap();
    refused(o, &["git update-index", "needs the git command"]);
    assert_eq!(env.head(), head, "no branch moved");
    // git is started before any file is written.
    assert!(
        env.git(&["status", "--porcelain"]).trim().is_empty(),
        "work tree untouched"
    );
    let out = env.ok(&["apply", "--now", "2026-12-02T00:00:00Z"], 3);
    assert_ne!(env.head(), head, "{out}");
    // Plumbing does not refresh the index: the entries gitca wrote carry their file stat.
    env.git(&["diff-files", "--quiet"]);
    env.git(&["diff-index", "--quiet", "HEAD", "--"]);
    assert!(
        env.git(&["status", "--porcelain"]).trim().is_empty(),
        "work tree clean"
    );
    assert_eq!(
        env.read("issued/servers/web-01.pem"),
        env.git(&["show", "HEAD:issued/servers/web-01.pem"]),
        "the work tree holds the committed certificate"
    );
    assert_eq!(
        env.read("issued/servers/db-02.pem"),
        env.git(&["show", "HEAD:issued/servers/db-02.pem"]),
    );
}

/// The plan basis is recorded while git updates its index, before the branch moves. When the
/// index update then fails (git holds its lock), the basis names an output tree the branch never
/// got: the rerun must notice and commit every output, not only what it issued itself (nothing).
#[test]
fn an_outputs_commit_that_fails_after_the_basis_was_recorded_converges() {
    let env = issued_then_web01_shortened();
    let head = env.head();
    let lock = env.path(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    refused(
        env.gitca(&["apply", "--now", "2026-12-02T00:00:00Z"]),
        &["git update-index", "index.lock"],
    );
    assert_eq!(env.head(), head, "no branch moved");
    // The failed run signed and wrote web-01's new certificate into the work tree.
    let signed = env.read("issued/servers/web-01.pem");
    assert_ne!(signed, env.git(&["show", "HEAD:issued/servers/web-01.pem"]));
    std::fs::remove_file(&lock).unwrap();
    let applied: Value = serde_json::from_str(&env.ok(
        &["apply", "--format", "json", "--now", "2026-12-02T00:00:00Z"],
        3,
    ))
    .unwrap();
    assert_eq!(scan(&applied).0, "incremental", "{}", applied["scan"]);
    assert!(
        issued(&applied).is_empty(),
        "signed by the failed run already"
    );
    assert_ne!(env.head(), head, "the rerun committed the outputs");
    assert_eq!(
        env.git(&["show", "HEAD:issued/servers/web-01.pem"]),
        signed,
        "HEAD holds the certificate the failed run signed"
    );
    assert!(env.git(&["status", "--porcelain"]).trim().is_empty());
    env.ok(&["verify"], 0);
}

/// With no CRL due, an apply starts its outputs commit before the state write, so git updates
/// its index meanwhile. Stopped at any step of that order, the failed run moves no branch, and
/// the rerun converges without signing web-01 twice.
#[test]
fn an_issue_stopped_at_any_step_before_its_commit_converges() {
    let at = "2026-12-02T00:00:00Z";
    for step in [
        "after-intent",
        "after-sign",
        "after-record",
        "after-outputs",
        "before-commit",
        "after-state",
    ] {
        let env = issued_then_web01_shortened();
        let head = env.head();
        let o = env.gitca(&["apply", "--now", at, "--fail-at", step]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "{step}: the injected failure is an error"
        );
        assert_eq!(env.head(), head, "{step}: no branch moved");
        let committed = env.git(&["show", "HEAD:issued/servers/web-01.pem"]);
        if step == "after-state" {
            // The outputs went first: the certificate is in the work tree, not committed.
            assert_ne!(env.read("issued/servers/web-01.pem"), committed, "{step}");
        }
        // Exit 3: the example keeps a rejected request.
        let applied = apply_at_exit(&env, &[], at, 3);
        // Every step is after the intent: the rerun completes it (or finds it indexed), it
        // does not issue anew.
        assert!(issued(&applied).is_empty(), "{step}: {}", applied["issued"]);
        let in_work_tree = env.read("issued/servers/web-01.pem");
        assert_ne!(in_work_tree, committed, "{step}: web-01 reissued");
        assert_eq!(
            env.git(&["show", "HEAD:issued/servers/web-01.pem"]),
            in_work_tree,
            "{step}: the rerun committed it"
        );
        assert!(
            env.git(&["status", "--porcelain"]).trim().is_empty(),
            "{step}"
        );
        env.git(&["diff-files", "--quiet"]);
        let certs = env.index("example-ca")["certs"].clone();
        let web01 = certs
            .as_object()
            .unwrap()
            .values()
            .filter(|c| c["request_id"] == "requests/servers/web-01.yaml")
            .count();
        assert_eq!(web01, 2, "{step}: the first certificate and one reissue");
        env.ok(&["verify"], 0);
        let again = apply_at_exit(&env, &[], at, 3);
        assert!(
            issued(&again).is_empty(),
            "{step}: the third run is a no-op"
        );
    }
}

/// The example applied on 2026-12-01, then web-01's lifetime shortened and committed: the next
/// apply reissues web-01.
fn issued_then_web01_shortened() -> Env {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    env.ok(&["apply", "--now", "2026-12-01T00:00:00Z"], 3);
    env.edit("requests/servers/web-01.yaml", |y| {
        y.replace("lifetime: 60d", "lifetime: 45d")
    });
    env.commit_all("web-01 shorter");
    env
}

/// Asserts a run failed with an error naming each of `needles`.
#[track_caller]
fn refused(o: std::process::Output, needles: &[&str]) {
    assert_ne!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(needles.iter().all(|n| err.contains(n)), "{err}");
}

/// Applies at `at` (exit 0 expected) and returns its JSON.
fn apply_at(env: &Env, args: &[&str], at: &str) -> Value {
    apply_at_exit(env, args, at, 0)
}

/// Applies at `at`, expecting exit `code`, and returns its JSON.
fn apply_at_exit(env: &Env, args: &[&str], at: &str, code: i32) -> Value {
    let mut a = vec!["apply", "--format", "json", "--now", at];
    a.extend_from_slice(args);
    serde_json::from_str(&env.ok(&a, code)).unwrap()
}

/// The example repository, initialised, without the requests its plan rejects (uncommitted):
/// a plan with rejections reports them on every run, so it never goes quiet.
fn example_without_rejections() -> Env {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    let (p, _) = env.plan_json(&[]);
    for r in p["requests"].as_array().unwrap() {
        if r["action"] == "rejected" {
            std::fs::remove_file(env.path(r["id"].as_str().unwrap())).unwrap();
        }
    }
    env
}

/// The full plan at `at` has nothing to do: every request unchanged (or revoked), no CRL due.
fn full_plan_is_noop(env: &Env, at: &str) -> bool {
    let (p, code) = env.plan_json(&["--at", at]);
    code == 0
        && p["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] == "unchanged" || r["action"] == "revoked")
}

/// A run that found nothing to do leaves a quiet record; the next runs on the same tree and
/// state read nothing, until the deadline it computed (checked against the full plan just
/// before it), a state change by another command, or a change to the tree where a plan reads
/// or gitca writes (a file no plan reads leaves it quiet).
#[test]
fn quiet_runs_read_nothing_until_something_changes() {
    let env = example_without_rejections();
    env.commit_all("only acceptable requests");
    let t = |m: u32| format!("2026-12-01T00:{m:02}:00Z");

    let a = step(&env, &t(0));
    assert_eq!(scan(&a).0, "full");
    assert!(!issued(&a).is_empty());
    let total = requests(&a);
    // Nothing to do, found by planning: this run writes the quiet record.
    let a = step(&env, &t(1));
    assert_eq!(scan(&a).0, "incremental", "{}", a["scan"]);
    assert!(issued(&a).is_empty());

    // Quiet: no request is read or listed, and the full plan agrees there is nothing to do.
    let q = apply_at(&env, &[], &t(2));
    assert_eq!(scan(&q), ("quiet", 0, total), "{}", q["scan"]);
    assert_eq!(requests(&q), 0);
    assert!(full_plan_is_noop(&env, &t(2)));
    assert_eq!(env.git(&["status", "--porcelain"]), "");
    // It does not read the plan basis: a quiet run does not notice a damaged one.
    let basis = env.state("example-ca").join("plan-basis.txt");
    let good = std::fs::read(&basis).unwrap();
    std::fs::write(&basis, "damaged\n").unwrap();
    assert_eq!(apply_at(&env, &[], &t(2))["scan"]["kind"], "quiet");
    std::fs::write(&basis, good).unwrap();

    // What the record does not pin plans: a time before the run that wrote it (another
    // runner's clock), and events sent to a file when the recording run sent none (expiry
    // thresholds it crossed are still pending). Each of those runs records anew.
    let early = apply_at(&env, &[], "2026-12-01T00:00:30Z");
    assert_eq!(early["scan"]["kind"], "incremental", "{}", early["scan"]);
    let events = env.tmp().join("events.jsonl");
    let events = events.to_str().unwrap();
    let e = apply_at(&env, &["--events", events], &t(2));
    assert_eq!(e["scan"]["kind"], "incremental", "{}", e["scan"]);
    assert_eq!(
        apply_at(&env, &["--events", events], &t(2))["scan"]["kind"],
        "quiet"
    );
    assert_eq!(apply_at(&env, &[], &t(2))["scan"]["kind"], "incremental");
    assert_eq!(apply_at(&env, &[], &t(2))["scan"]["kind"], "quiet");

    // The deadline is the first moment something is due: the full plan a second before it
    // still has nothing to do, and the run at it plans (and finds the due work).
    let reason = q["scan"]["reason"].as_str().unwrap();
    let until = reason.rsplit(' ').next().unwrap();
    let until_t =
        time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).unwrap();
    let before = (until_t - time::Duration::seconds(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(full_plan_is_noop(&env, &before), "due before {until}");
    assert_eq!(apply_at(&env, &[], &before)["scan"]["kind"], "quiet");
    let (at_until, _) = env.plan_json(&["--at", until]);
    assert!(
        at_until["crl_due"].is_string()
            || at_until["requests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["action"] == "renew"),
        "nothing was due at the quiet deadline {until}: {at_until}"
    );
    let a = step(&env, until);
    assert_eq!(scan(&a).0, "incremental");

    // Quiet again after a run that did nothing; then another command changes the state (a
    // forced CRL): the index moved, so the next run plans.
    let later = (until_t + time::Duration::minutes(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let later2 = (until_t + time::Duration::minutes(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(scan(&step(&env, &later)).0, "incremental");
    assert_eq!(apply_at(&env, &[], &later)["scan"]["kind"], "quiet");
    env.ok(&["crl", "--force", "--now", &later], 0);
    let a = step(&env, &later2);
    assert_eq!(scan(&a).0, "incremental", "{}", a["scan"]);

    // A file no plan reads: the tree changed, but not where a plan reads or gitca writes, so
    // the run stays quiet (and the full plan agrees).
    std::fs::write(env.path("NOTES.md"), "notes\n").unwrap();
    env.commit_all("notes");
    let q = apply_at(&env, &[], &later2);
    assert_eq!(scan(&q), ("quiet", 0, total), "{}", q["scan"]);
    assert!(full_plan_is_noop(&env, &later2));
    // Any file under requests/ is for a plan to read, even one that is not a request.
    std::fs::write(env.path("requests/NOTES.md"), "notes\n").unwrap();
    env.commit_all("notes beside the requests");
    let a = step(&env, &later2);
    assert_eq!(scan(&a).0, "incremental", "{}", a["scan"]);
    assert_eq!(apply_at(&env, &[], &later2)["scan"]["kind"], "quiet");

    // A hand-edited output: planned, and put back.
    std::fs::write(env.path("issued/servers/web-01.pem"), "tampered\n").unwrap();
    env.commit_all("hand edit");
    let a = step(&env, &later2);
    assert_ne!(scan(&a).0, "quiet");
    assert!(
        env.read("issued/servers/web-01.pem")
            .contains("BEGIN CERTIFICATE")
    );

    // Put back, the tree is the one the quiet record was written for, and the state did not
    // move (outputs are derived from it): quiet again. `--full-scan` never is.
    assert_eq!(apply_at(&env, &[], &later2)["scan"]["kind"], "quiet");
    let f = apply_at(&env, &["--full-scan"], &later2);
    assert_eq!(f["scan"]["kind"], "full");
}

/// A request may name a CSR anywhere in the CA folder. Once one does, no change to the tree
/// leaves a quiet record standing: any file might be that CSR. Moved back under `requests/`,
/// a file no plan reads stays quiet again.
#[test]
fn a_csr_outside_requests_makes_every_tree_change_plan() {
    let env = example_without_rejections();
    std::fs::create_dir_all(env.path("keys")).unwrap();
    // web-01's CSR moved from `from` to `to`, both as its request names them.
    let move_csr = |from: &str, to: &str| {
        let at = |name: &str| {
            env.path(
                &gitca::domain::names::join_relative("requests/servers/web-01.yaml", name).unwrap(),
            )
        };
        std::fs::rename(at(from), at(to)).unwrap();
        env.edit("requests/servers/web-01.yaml", |y| {
            y.replace(&format!("csr: {from}"), &format!("csr: {to}"))
        });
    };
    move_csr("web-01.csr.pem", "../../keys/web-01.csr.pem");
    env.commit_all("web-01's CSR kept outside requests/");
    let t = |m: u32| format!("2026-12-01T00:{m:02}:00Z");
    let a = step(&env, &t(0));
    assert!(issued(&a).contains(&"requests/servers/web-01.yaml"), "{a}");
    assert_eq!(scan(&step(&env, &t(1))).0, "incremental");
    assert_eq!(apply_at(&env, &[], &t(2))["scan"]["kind"], "quiet");
    let record =
        std::fs::read_to_string(env.state("example-ca").join("reconcile-quiet.txt")).unwrap();
    assert!(record.contains("reads\telsewhere"), "{record}");

    // A file that no request names today: planned all the same.
    std::fs::write(env.path("NOTES.md"), "notes\n").unwrap();
    env.commit_all("notes");
    let a = step(&env, &t(3));
    assert_eq!(scan(&a).0, "incremental", "{}", a["scan"]);
    assert_eq!(apply_at(&env, &[], &t(3))["scan"]["kind"], "quiet");

    // Back under requests/ (a changed request, planned): then a file no plan reads is quiet.
    move_csr("../../keys/web-01.csr.pem", "web-01.csr.pem");
    env.commit_all("web-01's CSR back beside its request");
    step(&env, &t(4));
    assert_eq!(scan(&step(&env, &t(5))).0, "incremental");
    let record =
        std::fs::read_to_string(env.state("example-ca").join("reconcile-quiet.txt")).unwrap();
    assert!(record.contains("reads\trequests"), "{record}");
    std::fs::write(env.path("NOTES.md"), "more notes\n").unwrap();
    env.commit_all("more notes");
    assert_eq!(apply_at(&env, &[], &t(6))["scan"]["kind"], "quiet");
}

/// A `request:` revocation entry for a request that never had a certificate holds only while
/// the file it names exists, anywhere in the CA folder. Once an entry names one outside
/// `requests/`, no change to the tree leaves a quiet record standing: deleting that file is
/// reported. A run with anything to report removes the quiet record, so the report repeats.
#[test]
fn a_revoked_request_outside_requests_makes_every_tree_change_plan() {
    let env = example_without_rejections();
    std::fs::create_dir_all(env.path("retired")).unwrap();
    std::fs::write(env.path("retired/old-api.yaml"), "csr: x.csr\n").unwrap();
    env.edit("revocations.yaml", |y| {
        y + "  - request: retired/old-api.yaml\n    reason: cessation_of_operation\n"
    });
    env.commit_all("revoke a retired request");
    let t = |m: u32| format!("2026-12-01T00:{m:02}:00Z");
    step(&env, &t(0));
    assert_eq!(scan(&step(&env, &t(1))).0, "incremental");
    assert_eq!(apply_at(&env, &[], &t(2))["scan"]["kind"], "quiet");
    let record = env.state("example-ca").join("reconcile-quiet.txt");
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains("reads\telsewhere"), "{text}");

    // The retired file goes: the entry names nothing now, which the run reports.
    env.git(&["rm", "-q", "retired/old-api.yaml"]);
    env.commit_all("remove the retired request");
    let a = apply_at_exit(&env, &[], &t(3), 3);
    assert_ne!(a["scan"]["kind"], "quiet", "{}", a["scan"]);
    let codes = a["plan"]["revocations"].to_string();
    assert!(codes.contains("revocation-unknown-request"), "{codes}");
    assert!(!record.exists(), "a report leaves no quiet record");
    let again = apply_at_exit(&env, &[], &t(4), 3);
    assert_ne!(again["scan"]["kind"], "quiet", "{}", again["scan"]);
}

/// A request reissued without `revoke_superseded` leaves its old certificate live. The next
/// runs carry it like any other (the full plan leaves it unchanged, nothing to supersede)
/// instead of reading it in full until the old certificate expires.
#[test]
fn a_reissued_request_whose_old_certificate_stays_live_is_carried() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    step(&env, "2026-12-01T00:00:00Z");
    env.edit("requests/servers/api.yaml", |y| {
        y.replace("lifetime: 90d", "lifetime: 60d")
    });
    env.commit_all("shorter api lifetime");
    let at = "2026-12-02T00:00:00Z";
    let a = step(&env, at);
    assert!(issued(&a).contains(&"requests/servers/api.yaml"), "{a}");
    let index = env.index("example-ca");
    let live_api = index["certs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|c| c["request_id"] == "requests/servers/api.yaml" && c["revoked"].is_null())
        .count();
    assert_eq!(live_api, 2, "the old api certificate stays live");

    // An unrelated commit, planned at the same instant: nothing is due, so only the requests
    // the basis cannot carry (rejected, or blocked by a revocation) are read.
    std::fs::write(env.path("NOTES.md"), "unrelated\n").unwrap();
    env.commit_all("notes");
    let a = step(&env, at);
    let (kind, read, _) = scan(&a);
    assert_eq!(kind, "incremental", "{a}");
    let must_read = a["plan"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| matches!(r["action"].as_str(), Some("rejected" | "revoked")))
        .count() as u64;
    assert_eq!(read, must_read, "{}", a["scan"]);
}

/// More requests than one round of the plan's parallel step (1,024), all with one key: the
/// rounds are decided in id order while the next is prepared, so the first request takes the
/// key and every later one, in whichever round, is refused it; the same on one thread and four.
#[test]
fn a_key_is_decided_in_id_order_across_the_plans_rounds() {
    const MANY: usize = 2_100;
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    let dir = env.path("requests/servers/many");
    std::fs::create_dir_all(&dir).unwrap();
    new_p256_csr(&dir.join("shared.csr.pem"), "many.internal.example.com");
    for n in 0..MANY {
        std::fs::write(
            dir.join(format!("r{n:04}.yaml")),
            format!(
                "csr: shared.csr.pem\nusages: [server_auth]\n\
                 sans: {{dns: [many.internal.example.com, r{n}.internal.example.com]}}\n"
            ),
        )
        .unwrap();
    }
    env.commit_all("many requests with one key");
    let plan_on = |threads: &str| -> Value {
        let o = env
            .command_in(&env.repo, &["plan", "--format", "json"])
            .env("GITCA_THREADS", threads)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!("plan: {e}: {}", String::from_utf8_lossy(&o.stderr));
        })
    };
    let one = plan_on("1");
    assert_eq!(decisions(&one), decisions(&plan_on("4")));
    let many: Vec<&Value> = (one["requests"].as_array().unwrap().iter())
        .filter(|r| {
            r["id"]
                .as_str()
                .unwrap()
                .starts_with("requests/servers/many/")
        })
        .collect();
    assert_eq!(many.len(), MANY);
    assert_eq!(many[0]["id"], "requests/servers/many/r0000.yaml");
    assert_eq!(many[0]["action"], "issue", "{}", many[0]);
    for r in &many[1..] {
        assert_eq!(r["action"], "rejected", "{r}");
        assert!(codes_in(r, "findings").contains("key-reuse"), "{r}");
    }
}

/// Output files come from three places: this run's certificates encoded as PEM beside its
/// state writes, this run's past that cap (encoded with the outputs), and the state, for a
/// certificate an earlier run signed whose files are gone. With the cap at one, the run below
/// takes from all three: each output is its request's current certificate, the one deleted is
/// restored byte for byte, the work tree is clean and `gitca verify` agrees.
#[test]
fn outputs_encoded_beside_past_the_cap_and_from_the_state_are_each_the_current_certificate() {
    if !have("openssl") {
        return;
    }
    let env = issued_then_web01_shortened();
    env.edit("requests/servers/api.yaml", |y| {
        y.replace("lifetime: 90d", "lifetime: 80d")
    });
    let (alice, alice_chain) = ("issued/clients/alice.pem", "issued/clients/alice.chain.pem");
    let before = (
        std::fs::read(env.path(alice)).unwrap(),
        std::fs::read(env.path(alice_chain)).unwrap(),
    );
    env.git(&["rm", "-q", alice, alice_chain]);
    env.commit_all("api shorter, alice's outputs gone");

    let a = apply_at_exit(
        &env,
        &["--pem-beside", "1", "--full-scan"],
        "2026-12-02T00:00:00Z",
        3,
    );
    let mut issued: Vec<(&str, &str)> = (a["issued"].as_array().unwrap().iter())
        .map(|i| {
            (
                i["request_id"].as_str().unwrap(),
                i["serial"].as_str().unwrap(),
            )
        })
        .collect();
    issued.sort();
    assert_eq!(
        issued.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [
            "requests/servers/api.yaml",
            "requests/servers/web-01.yaml",
            "requests/workloads/payments-api.yaml"
        ],
        "two reissued, one renewed: {a}"
    );
    let hex = |s: &str| s.trim_start_matches('0').to_ascii_lowercase();
    for (id, serial) in issued {
        let id = id.trim_start_matches("requests/").trim_end_matches(".yaml");
        let leaf = env.path(&format!("issued/{id}.pem"));
        assert_eq!(hex(&openssl_serial(&leaf)), hex(serial), "{id}");
        let leaf = std::fs::read(leaf).unwrap();
        let chain = std::fs::read(env.path(&format!("issued/{id}.chain.pem"))).unwrap();
        assert!(chain.starts_with(&leaf) && chain.len() > leaf.len(), "{id}");
    }
    let after = (
        std::fs::read(env.path(alice)).unwrap(),
        std::fs::read(env.path(alice_chain)).unwrap(),
    );
    assert!(after == before, "alice's outputs restored from the state");
    assert_eq!(env.git(&["status", "--porcelain"]), "", "work tree clean");
    env.ok(&["verify"], 0);
}

/// Defect: the plan basis and the quiet record were trusted when written by the same package
/// version, which did not change when plan rules did (a request a new rule rejects stayed
/// carried as `unchanged` after an upgrade). They are trusted only from the same build: one
/// written by another (here, its build id rewritten) makes the next run plan in full.
#[test]
fn a_basis_or_quiet_record_of_another_build_plans_in_full() {
    let env = example_without_rejections();
    env.commit_all("only acceptable requests");
    let t = |m: u32| format!("2026-12-01T00:{m:02}:00Z");
    assert_eq!(scan(&step(&env, &t(0))).0, "full");
    assert_eq!(scan(&step(&env, &t(1))).0, "incremental");
    assert_eq!(apply_at(&env, &[], &t(2))["scan"]["kind"], "quiet");

    let another_build = |name: &str| {
        let path = env.state("example-ca").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let version = text.lines().nth(1).unwrap().to_string();
        assert!(version.starts_with("version\t0.1.0+"), "{version}");
        std::fs::write(&path, text.replace(&version, "version\t0.1.0")).unwrap();
    };
    another_build("reconcile-quiet.txt");
    let a = apply_at(&env, &[], &t(3));
    assert_eq!(a["scan"]["kind"], "incremental", "{}", a["scan"]);
    // That run wrote a quiet record of its own; with both rewritten, the basis is not read.
    another_build("reconcile-quiet.txt");
    another_build("plan-basis.txt");
    let a = apply_at(&env, &[], &t(4));
    assert_eq!(a["scan"]["kind"], "full", "{}", a["scan"]);
    let reason = a["scan"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("another gitca build"), "{}", a["scan"]);
}

/// Defect found by review: a leaf counted as written when its serial matched and its chain
/// file merely existed, so after the CA certificate was renewed (same key, new validity) every
/// chain file kept serving the old one until its leaf renewed. Every chain file now follows
/// the CA certificates the bundle holds.
#[test]
fn chain_files_follow_a_renewed_ca_certificate() {
    let env = example_without_rejections();
    env.commit_all("only acceptable requests");
    let first = step(&env, "2026-12-01T00:00:00Z");
    assert!(!issued(&first).is_empty());
    let old_bundle = env.read("ca/bundle.pem");

    let key = env
        .state("example-ca")
        .parent()
        .unwrap()
        .join("issuing-ca.key");
    let ca = env.path("ca/issuing-ca.pem");
    let (ca, key) = (ca.to_str().unwrap(), key.to_str().unwrap());
    common::tool_in(
        "openssl",
        env.tmp(),
        &[
            "x509",
            "-in",
            ca,
            "-signkey",
            key,
            "-days",
            "3000",
            "-set_serial",
            "0x1234",
            "-out",
            ca,
        ],
    );
    // One leaf hand-edited to lack its final newline: a chain assembled from it would join
    // two PEM blocks on one line, which no reader takes.
    let edited = common::leaf_files(&env.path("issued")).remove(0);
    let text = std::fs::read_to_string(&edited).unwrap();
    std::fs::write(&edited, text.trim_end()).unwrap();
    env.commit_all("the CA certificate renewed, same key");
    let a = step(&env, "2026-12-01T00:01:00Z");
    assert!(issued(&a).is_empty(), "no leaf is due: {}", a["scan"]);

    let bundle = env.read("ca/bundle.pem");
    assert_ne!(
        bundle, old_bundle,
        "the bundle holds the renewed CA certificate"
    );
    let chains = common::leaf_files(&env.path("issued"));
    assert!(!chains.is_empty());
    for leaf in chains {
        let chain = leaf.to_str().unwrap().replace(".pem", ".chain.pem");
        let leaf_pem = std::fs::read_to_string(&leaf).unwrap();
        let chain = std::fs::read_to_string(&chain).unwrap();
        assert!(
            leaf_pem.ends_with("-----END CERTIFICATE-----\n"),
            "{}",
            leaf.display()
        );
        assert_eq!(chain, format!("{leaf_pem}{bundle}"), "{}", leaf.display());
    }
    assert_eq!(env.git(&["status", "--porcelain"]), "");

    // The bundle removed by hand: a full run writes it again and changes no chain file.
    std::fs::remove_file(env.path("ca/bundle.pem")).unwrap();
    env.commit_all("the bundle removed");
    let before = env.head();
    apply_at(&env, &["--full-scan"], "2026-12-01T00:02:00Z");
    let changed = env.git(&["diff", "--name-only", &before, "HEAD"]);
    assert_eq!(changed.trim(), "ca/bundle.pem");
    assert_eq!(env.read("ca/bundle.pem"), bundle);
}

/// Defect found by review: a `request:` revocation naming a file under `requests/` that is
/// no request (`NOTES.md`) was accepted by the full plan, which holds every file, and rejected
/// by the next incremental one, which holds the files it read. Both reject it now.
#[test]
fn a_revocation_naming_a_file_that_is_no_request_is_rejected_by_both_plans() {
    let env = example_without_rejections();
    std::fs::write(env.path("requests/servers/NOTES.md"), "not a request\n").unwrap();
    env.commit_all("only acceptable requests, and notes");
    step(&env, "2026-12-01T00:00:00Z");
    env.edit("revocations.yaml", |r| {
        format!("{r}  - request: requests/servers/NOTES.md\n    reason: superseded\n")
    });
    env.commit_all("a revocation naming the notes");
    let rejected = |a: &Value| {
        a["plan"]["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "rejected" && r.to_string().contains("NOTES.md"))
    };
    let a = step(&env, "2026-12-01T00:01:00Z");
    assert_eq!(scan(&a).0, "full");
    assert!(rejected(&a), "{}", a["plan"]["revocations"]);
    let a = step(&env, "2026-12-01T00:02:00Z");
    assert_eq!(scan(&a).0, "incremental");
    assert!(rejected(&a), "{}", a["plan"]["revocations"]);
}
