//! One fixture per defect (tests/fixtures/defect-repo, see its README): each gets its coded
//! finding, and the good requests in the same commit are still planned and issued.

mod common;
use common::*;
use std::collections::BTreeMap;

#[derive(serde::Deserialize)]
struct Expected {
    requests: BTreeMap<String, Vec<String>>,
    revocations: Vec<ExpectedRevocation>,
}

#[derive(serde::Deserialize)]
struct ExpectedRevocation {
    index: usize,
    codes: Vec<String>,
}

fn codes(v: &serde_json::Value) -> Vec<String> {
    codes_in(v, "findings").into_iter().collect()
}

#[test]
fn every_defect_gets_its_code_and_good_requests_are_issued() {
    let expected: Expected = serde_yaml_ng::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/defect-repo/expected.yaml")).unwrap(),
    )
    .unwrap();
    let env = Env::from(
        &format!("{FIXTURES}/defect-repo"),
        &["expected.yaml", "README.md"],
    );
    env.init(&["--single"]);
    let (plan, code) = env.plan_json(&[]);
    assert_eq!(code, 3, "rejections present");
    let by_id: BTreeMap<String, &serde_json::Value> = plan["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    assert_eq!(
        by_id.keys().collect::<Vec<_>>(),
        expected.requests.keys().collect::<Vec<_>>(),
        "every fixture is planned"
    );
    for (id, want) in &expected.requests {
        let r = by_id[id];
        let mut want = want.clone();
        want.sort();
        assert_eq!(codes(r), want, "{id}: {r}");
        if want.is_empty() {
            assert_eq!(r["action"], "issue", "{id}");
        } else {
            assert_eq!(r["action"], "rejected", "{id}");
            for f in r["findings"].as_array().unwrap() {
                assert_eq!(f["file"], id.as_str(), "a finding names its request file");
                assert!(!f["message"].as_str().unwrap().is_empty());
            }
        }
    }
    // A key off its curve is named as such, not as a signature that failed.
    let off_curve = by_id["requests/csr-key-not-on-curve.yaml"]["findings"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        off_curve.contains("P256 public key is not valid"),
        "{off_curve}"
    );
    // A signature over a non-DER SET OF is named as an encoding problem, not as a failed
    // proof of possession.
    let not_der = by_id["requests/csr-set-of-not-der.yaml"]["findings"][0]["message"]
        .as_str()
        .unwrap();
    assert!(not_der.contains("is not DER"), "{not_der}");
    let revs = plan["revocations"].as_array().unwrap();
    assert_eq!(revs.len(), expected.revocations.len());
    for e in &expected.revocations {
        let r = revs.iter().find(|r| r["index"] == e.index).unwrap();
        assert_eq!(codes(r), e.codes, "revocation #{}: {r}", e.index);
        assert_eq!(r["findings"][0]["file"], "revocations.yaml");
    }

    // Apply processes the good requests despite the rejections.
    let out = env.ok(&["apply"], 3);
    let good = expected.requests.values().filter(|c| c.is_empty()).count();
    assert!(
        out.contains(
            &format!("{good} signature(s)").replace(&good.to_string(), &(good + 1).to_string())
        ),
        "good requests + CRL signed: {out}"
    );
    assert_eq!(leaf_files(&env.path("issued")).len(), good);

    // The markdown and text renderings name the codes too.
    let md = env.ok(&["plan", "--format", "markdown"], 3);
    assert!(
        md.contains("`csr-bad-signature`") && md.contains("| Action |"),
        "{md}"
    );
    let text = env.ok(&["plan"], 3);
    assert!(text.contains("[wildcard-not-allowed]"), "{text}");
}

/// A CSR committed as a symbolic link is refused (it could point outside the repository).
#[test]
fn symlinked_csr_is_refused() {
    let env = Env::from(
        &format!("{FIXTURES}/defect-repo"),
        &["expected.yaml", "README.md", "revocations.yaml"],
    );
    env.init(&["--single"]);
    let link = env.path("requests/csr-symlinked.csr.pem");
    std::os::unix::fs::symlink("good-p256.csr.pem", &link).unwrap();
    std::fs::write(
        env.path("requests/csr-symlinked.yaml"),
        "csr: csr-symlinked.csr.pem\nsans: {dns: [sym.test.example.com]}\n",
    )
    .unwrap();
    env.commit_all("symlinked CSR");
    let (plan, _) = env.plan_json(&[]);
    let r = plan_request(&plan, "requests/csr-symlinked.yaml");
    assert_eq!(codes(r), ["request-not-regular-file"], "{r}");
}

#[test]
fn oversized_request_is_refused() {
    let env = Env::from(
        &format!("{FIXTURES}/defect-repo"),
        &["expected.yaml", "README.md", "revocations.yaml"],
    );
    env.init(&["--single"]);
    let mut big = String::from("csr: good-p256.csr.pem\n");
    while big.len() < 70_000 {
        big.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(env.path("requests/request-too-large.yaml"), big).unwrap();
    env.commit_all("oversized");
    let (plan, _) = env.plan_json(&[]);
    let r = plan_request(&plan, "requests/request-too-large.yaml");
    assert_eq!(codes(r), ["request-too-large"]);
}

/// The same key in a later commit, while the first certificate is live: key-reuse.
#[test]
fn key_reuse_across_commits_and_ca_key_reuse() {
    let env = Env::from(
        &format!("{FIXTURES}/defect-repo"),
        &["expected.yaml", "README.md", "revocations.yaml"],
    );
    env.init(&["--single"]);
    env.ok(&["apply"], 3);
    std::fs::copy(
        env.path("requests/good-p256.csr.pem"),
        env.path("requests/reuse-later.csr.pem"),
    )
    .unwrap();
    std::fs::write(
        env.path("requests/reuse-later.yaml"),
        "csr: reuse-later.csr.pem\nsans: {dns: [later.test.example.com]}\n",
    )
    .unwrap();
    env.commit_all("reuse a key");
    let (plan, _) = env.plan_json(&[]);
    let r = plan_request(&plan, "requests/reuse-later.yaml");
    assert_eq!(codes(r), ["key-reuse"]);
    assert!(
        r["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("requests/good-p256.yaml")
    );

    // A CSR for the CA's own key (made with openssl from the CA key) is refused.
    if have("openssl") {
        let key = env.data.join("defect-ca/issuing-ca.key");
        let csr = env.path("requests/ca-key.csr.pem");
        let o = std::process::Command::new("openssl")
            .args(["req", "-new", "-subj", "/CN=ca.test.example.com", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(
            env.path("requests/ca-key.yaml"),
            "csr: ca-key.csr.pem\nsans: {dns: [ca.test.example.com]}\n",
        )
        .unwrap();
        env.commit_all("CA key as a subject key");
        let (plan, _) = env.plan_json(&[]);
        let r = plan_request(&plan, "requests/ca-key.yaml");
        assert_eq!(codes(r), ["csr-key-is-ca-key"]);
    }
}

/// Published revocations are append-only: removing or changing one stops the run.
#[test]
fn revocation_removed_or_changed_is_refused() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let original = env.read("revocations.yaml");
    env.edit("revocations.yaml", |y| {
        y.replace("superseded", "key_compromise")
    });
    env.commit_all("change a published revocation");
    let o = env.gitca(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("revocations.yaml") && err.contains("changed") && err.contains("append-only"),
        "{err}"
    );

    std::fs::write(env.path("revocations.yaml"), "revocations: []\n").unwrap();
    env.commit_all("remove a published revocation");
    let o = env.gitca(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("revocations.yaml") && err.contains("removed"),
        "{err}"
    );

    // Restoring it (append-only history) is accepted again.
    std::fs::write(env.path("revocations.yaml"), original).unwrap();
    env.commit_all("restore");
    env.ok(&["apply"], 3);
}

fn commit_a_revocation_file_that_does_not_parse(env: &Env) {
    std::fs::write(
        env.path("revocations.yaml"),
        "revocations:\n  - serial: [\n",
    )
    .unwrap();
    env.commit_all("a revocation file that does not parse");
}

/// Defect `crl-stops-with-the-plan`: a revocation file that does not parse (or a published
/// entry edited) stopped `gitca crl` with every other command, and the CRL would expire under
/// every relying party. `gitca crl` now signs it from the state alone, writes nothing but the
/// CRL, and still exits 1 naming the file; apply still refuses the commit.
#[test]
fn a_commit_that_does_not_plan_still_gets_its_crl_refreshed() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    env.ok(&["apply"], 3);
    let crl_number = |env: &Env| env.index("example-ca")["crl"]["number"].as_u64().unwrap();
    let before = crl_number(&env);
    let leaves = env.git(&["ls-tree", "-r", "HEAD", "issued"]);
    commit_a_revocation_file_that_does_not_parse(&env);
    let o = env.gitca(&["crl", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        out.contains(&format!("CRL number {} signed", before + 1)),
        "{out}"
    );
    assert!(err.contains("revocations.yaml"), "{err}");
    assert_eq!(crl_number(&env), before + 1);
    assert_eq!(
        env.git(&["ls-tree", "-r", "HEAD", "issued"]),
        leaves,
        "leaves untouched"
    );
    let changed = env.git(&["diff", "--name-only", "HEAD~1", "HEAD"]);
    assert_eq!(
        changed, "crl/example-ca.crl\ncrl/example-ca.crl.pem\n",
        "{changed}"
    );
    let o = env.gitca(&["apply"]);
    assert_eq!(o.status.code(), Some(1), "apply still refuses the commit");

    // Found by the review of the fix: with an interrupted run's intents, the recovery planned
    // first and stopped `gitca crl` all the same. The intents are left for apply.
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    let o = env.gitca(&["apply", "--fail-at", "after-intent"]);
    assert_eq!(o.status.code(), Some(1), "injected failure");
    commit_a_revocation_file_that_does_not_parse(&env);
    let o = env.gitca(&["crl", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("CRL number 1 signed"), "{out}");
    let intents = env.state("example-ca").join("intents");
    assert!(
        std::fs::read_dir(intents).unwrap().next().is_some(),
        "intents kept"
    );
}

/// Defect `config-symlink-misreported` (found by review): a gitca.yaml committed as a symbolic
/// link was read as a blob holding the link's target, and reported as invalid YAML. It was never
/// followed; now the error says what it is.
#[test]
fn a_config_committed_as_a_symbolic_link_is_named_as_one() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let elsewhere = env.tmp().join("gitca.yaml");
    std::fs::rename(env.path("gitca.yaml"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.path("gitca.yaml")).unwrap();
    env.commit_all("the config as a link");
    let o = env.gitca(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("gitca.yaml is a symbolic link"), "{err}");
}

/// Strict parsing of the config and policies: a clear error naming the file, nothing written.
#[test]
fn invalid_config_and_policy_are_errors_naming_the_file() {
    let env = Env::from(EXAMPLE, &[]);
    env.init(&[]);
    let cfg = env.read("gitca.yaml");
    std::fs::write(env.path("gitca.yaml"), format!("{cfg}\nfrobnicate: true\n")).unwrap();
    env.commit_all("bad config");
    let o = env.gitca(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("gitca.yaml") && err.contains("frobnicate"),
        "{err}"
    );
    assert!(
        !env.state("example-ca").join("index.json").exists(),
        "nothing written"
    );

    std::fs::write(env.path("gitca.yaml"), cfg).unwrap();
    std::fs::write(
        env.path("policies/broken.yaml"),
        "select: {paths: ['requests/x/**']}\nrules: {max_lifetime: 30d, dnss: {}}\n",
    )
    .unwrap();
    env.commit_all("bad policy");
    let o = env.gitca(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("policies/broken.yaml") && err.contains("dnss"),
        "{err}"
    );

    // Defect `policy-name-shared`: two files of one policy name, and `policy: <name>` used
    // whichever came first. A request naming it is now rejected, naming both; a request the
    // policies select by path is planned as before.
    std::fs::remove_file(env.path("policies/broken.yaml")).unwrap();
    std::fs::create_dir_all(env.path("policies/team")).unwrap();
    let other = env
        .read("policies/internal-tls.yaml")
        .replace("requests/servers/**", "requests/team/**");
    std::fs::write(env.path("policies/team/internal-tls.yml"), other).unwrap();
    env.commit_all("a second policy of one name");
    let (plan, code) = env.plan_json(&[]);
    assert_eq!(code, 3, "{plan}");
    let api = plan_request(&plan, "requests/servers/api.yaml");
    assert_eq!(api["findings"][0]["code"], "policy-ambiguous", "{api}");
    let message = api["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("policies/team/internal-tls.yml")
            && message.contains("policies/internal-tls.yaml"),
        "{message}"
    );
    assert_eq!(
        plan_request(&plan, "requests/servers/web-01.yaml")["action"],
        "issue",
        "selected by path: {plan}"
    );
}

/// Defect `revocations-misnamed`: a revocation list named `revocations.yml` (or
/// `revocations/x.YAML`) was never read, and the run reported nothing to do. It is rejected
/// now, naming the file, even on a repository whose runs were quiet; the rest goes on.
#[test]
fn a_revocation_file_gitca_does_not_read_is_rejected_naming_it() {
    // Without the rejected request, so the runs go quiet: a quiet run reads nothing.
    let env = Env::from(EXAMPLE, &EXAMPLE_ALL_ISSUED);
    env.init(&[]);
    // Issued, then nothing to do (a quiet record), then quiet.
    env.ok(&["apply"], 0);
    env.ok(&["apply"], 0);
    let quiet = env.ok(&["apply", "--format", "json"], 0);
    assert!(quiet.contains("\"kind\": \"quiet\""), "{quiet}");
    for name in ["revocations.yml", "revocations/2026.YAML"] {
        if let Some(folder) = env.path(name).parent() {
            std::fs::create_dir_all(folder).unwrap();
        }
        std::fs::copy(
            std::path::Path::new(EXAMPLE).join("revocations.yaml"),
            env.path(name),
        )
        .unwrap();
        env.commit_all(name);
        let (plan, code) = env.plan_json(&[]);
        assert_eq!(code, 3, "{name}: {plan}");
        let rejected = (plan["revocations"].as_array().unwrap().iter())
            .find(|r| r["file"] == name)
            .unwrap_or_else(|| panic!("{name}: {plan}"));
        assert_eq!(rejected["action"], "rejected");
        assert_eq!(rejected["findings"][0]["code"], "revocation-invalid");
        assert!(rejected.to_string().contains("rename it"), "{rejected}");
        env.ok(&["apply"], 3);
        std::fs::remove_file(env.path(name)).unwrap();
        env.commit_all("removed");
    }
}

/// `git mktree` of `lines` (`MODE TYPE ID\tNAME`) in `env`'s repository: the tree's id.
fn mktree(env: &Env, lines: &[String]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("git")
        .arg("mktree")
        .current_dir(&env.repo)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(lines.join("\n").as_bytes()).unwrap();
    input.write_all(b"\n").unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git mktree");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Defect `tree-entry-dot-dot`: a commit made with plumbing can hold a tree named `..` under
/// `requests/`. libgit2 read it, so `requests/../evil.yaml` was planned, and its outputs named
/// `issued/../evil.pem`, outside the output folder. The run now stops, naming the entry, and
/// nothing is signed.
#[test]
fn a_tree_entry_git_would_not_check_out_stops_the_run() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let head = env.head();
    let blob = |path: &str| {
        env.git(&["rev-parse", &format!("{head}:{path}")])
            .trim()
            .to_string()
    };
    let evil = mktree(
        &env,
        &[
            format!(
                "100644 blob {}\tevil.csr.pem",
                blob("requests/servers/web-01.csr.pem")
            ),
            format!(
                "100644 blob {}\tevil.yaml",
                blob("requests/servers/web-01.yaml")
            ),
        ],
    );
    let ls = |tree: &str| -> Vec<String> {
        env.git(&["ls-tree", tree])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let mut requests = ls(&format!("{head}:requests"));
    requests.push(format!("040000 tree {evil}\t.."));
    let requests = mktree(&env, &requests);
    let root: Vec<String> = ls(&head)
        .into_iter()
        .map(|l| match l.ends_with("\trequests") {
            true => format!("040000 tree {requests}\trequests"),
            false => l,
        })
        .collect();
    let root = mktree(&env, &root);
    let commit = env.git(&["commit-tree", &root, "-p", &head, "-m", "a tree named .."]);
    env.git(&["update-ref", "HEAD", commit.trim()]);
    for cmd in ["plan", "apply"] {
        let o = env.gitca(&[cmd]);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("requests/..") && err.contains("refuse to check out"),
            "{cmd}: {err}"
        );
    }
    assert!(
        !env.state("example-ca").join("index.json").exists(),
        "nothing signed"
    );
}

/// plan --worktree sees an uncommitted request; plan and apply never do.
#[test]
fn only_committed_requests_are_signed() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    std::fs::copy(
        env.path("requests/servers/web-01.csr.pem"),
        env.path("requests/servers/uncommitted.csr.pem"),
    )
    .unwrap();
    std::fs::write(
        env.path("requests/servers/uncommitted.yaml"),
        "csr: uncommitted.csr.pem\nsans: {dns: [new.internal.example.com]}\n",
    )
    .unwrap();
    let (wt, _) = env.plan_json(&["--worktree"]);
    assert!(
        wt["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "requests/servers/uncommitted.yaml")
    );
    let (committed, _) = env.plan_json(&[]);
    assert!(
        !committed["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "requests/servers/uncommitted.yaml")
    );
    let out = env.ok(&["apply"], 3);
    assert!(!out.contains("uncommitted"), "{out}");
    assert!(!env.path("issued/servers/uncommitted.pem").exists());
}

/// Commits `key` as the local signer's key path; `init` must refuse it as inside the repository.
fn init_refuses_the_key_path(env: &Env, key: &std::path::Path) {
    env.edit("gitca.yaml", |cfg| {
        format!("{cfg}\nsigner:\n  local:\n    key: {}\n", key.display())
    });
    env.commit_all("key path");
    let o = env.gitca(&["init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("inside the repository"));
}

#[test]
fn key_path_inside_the_repository_is_refused() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let inside = env.path("secret/ca.key");
    init_refuses_the_key_path(&env, &inside);
    assert!(!inside.exists());
}

/// A key path that names the repository and leaves it again (`<repo>/../data`, as
/// `GITCA_DATA_DIR` may well be set in CI) is outside it: it was refused as inside, whether or
/// not its folders existed, because the path was compared as written.
#[test]
fn a_key_path_through_dot_dot_out_of_the_repository_is_accepted() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let data = env.tmp().join("data");
    let via_repo = env.repo.join("..").join("data");
    assert!(via_repo.starts_with(&env.repo));
    let o = env
        .command_in(&env.repo, &["init"])
        .env("GITCA_DATA_DIR", &via_repo)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(data.join("example-ca").join("issuing-ca.key").exists());
}

/// Defect `data-dir-empty-or-relative`: `GITCA_DATA_DIR=` (empty) made `plan` create
/// `./example-ca/state` in the work tree and plan against that empty state; a relative one put
/// keys and state wherever the command ran. Empty is unset now; relative is refused.
#[test]
fn an_empty_data_dir_is_unset_and_a_relative_one_is_refused() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let home = env.tmp().join("home");
    let o = env
        .command_in(&env.repo, &["init"])
        .env("GITCA_DATA_DIR", "")
        .env("HOME", &home)
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        home.join(".local/share/gitca/example-ca/issuing-ca.key")
            .exists()
    );
    assert!(!env.path("example-ca").exists(), "nothing in the work tree");
    let o = env
        .command_in(&env.repo, &["plan"])
        .env("GITCA_DATA_DIR", "data")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("GITCA_DATA_DIR") && err.contains("absolute"),
        "{err}"
    );
    assert!(!env.path("data").exists(), "nothing made");
}

/// A key path through a symbolic link into the work tree, below a folder that does not exist
/// yet, is inside it: it was accepted, and `init` wrote the key into the work tree, because only
/// an existing parent was resolved.
#[test]
fn a_key_path_through_a_link_into_the_repository_is_refused() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let link = env.tmp().join("elsewhere");
    std::os::unix::fs::symlink(&env.repo, &link).unwrap();
    init_refuses_the_key_path(&env, &link.join("not-yet").join("ca.key"));
    assert!(
        !env.repo.join("not-yet").exists(),
        "nothing written in the work tree"
    );
}

/// A key path in the work tree that is a link to a key elsewhere stays refused, as it always
/// was: the key's bytes are not in Git, but a path gitca is told to keep a key at has no place
/// there (the check that follows links must not let it through).
#[test]
fn a_key_path_in_the_repository_linking_elsewhere_is_refused() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    let outside = env.tmp().join("outside.key");
    std::fs::write(&outside, "not a key").unwrap();
    let link = env.path("ca.key");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    init_refuses_the_key_path(&env, &link);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "not a key");
}

/// With `--dir`, the CA is one folder of a larger work tree, and a key path elsewhere in that
/// work tree was accepted (only the CA's folder was compared): `init` wrote both keys where one
/// `git add -A` commits them. So was one in the git directory, or in another worktree of the
/// repository. Each is refused now, and nothing is written.
#[test]
fn a_key_path_elsewhere_in_git_is_refused() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.move_ca_into("pki");
    let other = env.tmp().join("other-worktree");
    env.git(&[
        "worktree",
        "add",
        "-q",
        other.to_str().unwrap(),
        "-b",
        "other",
    ]);
    for data in [
        env.path("keys"),
        env.path(".git/gitca-keys"),
        other.join("keys"),
    ] {
        let o = env
            .command_in(&env.repo, &["--dir", "pki", "init"])
            .env("GITCA_DATA_DIR", &data)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {err}", data.display());
        assert!(err.contains("inside the repository"), "{err}");
        assert!(!data.exists(), "{} written", data.display());
    }
    // Outside every one of them, init goes on.
    env.ok(&["--dir", "pki", "init"], 0);
}

/// A file or folder whose name is not UTF-8 has no path gitca could name in a plan, a finding or
/// an output. Where gitca finds its inputs by listing (`requests/`, `policies/`, `revocations/`,
/// `certs/`), plans and applies refuse it, naming its path with the odd bytes replaced, until it
/// is renamed or removed; before, such a file was read as `?` (a request there was skipped
/// without a word), and such a folder failed with libgit2's "git_tree_walk callback returned
/// -1". Elsewhere it is no input and is left alone: the CRL, plans and applies go on.
#[test]
fn a_name_that_is_not_utf8_is_refused_naming_its_path() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let env = Env::from(
        &format!("{FIXTURES}/defect-repo"),
        &["expected.yaml", "README.md", "revocations.yaml"],
    );
    env.init(&["--single"]);
    env.ok(&["apply"], 3);
    let refused = |args: &[&str], shown: &str| {
        let o = env.gitca(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "gitca {args:?}: {err}");
        let expected = format!("{shown}: a name that is not UTF-8");
        assert!(err.contains(&expected), "gitca {args:?}: {err}");
    };
    let odd_file = env
        .path("requests")
        .join(OsStr::from_bytes(b"caf\xe9.yaml"));
    std::fs::write(&odd_file, "csr: good-p256.csr.pem\n").unwrap();
    env.commit_all("a request whose name is not UTF-8");
    for args in [&["plan"][..], &["plan", "--worktree"], &["apply"]] {
        refused(args, "requests/caf\u{fffd}.yaml");
    }
    let audit = env.ok(&["verify"], 2);
    assert!(
        audit.contains("requests/caf\u{fffd}.yaml: [name-not-utf8]"),
        "{audit}"
    );
    std::fs::remove_file(&odd_file).unwrap();
    let odd_folder = env.path("policies").join(OsStr::from_bytes(b"d\xe9"));
    std::fs::create_dir(&odd_folder).unwrap();
    std::fs::write(odd_folder.join("p.yaml"), "name: p\n").unwrap();
    env.commit_all("a folder whose name is not UTF-8");
    refused(&["plan"], "policies/d\u{fffd}");
    refused(&["apply"], "policies/d\u{fffd}");
    // Where no input is listed, such names are left alone.
    std::fs::remove_dir_all(&odd_folder).unwrap();
    let docs = env.path("docs").join(OsStr::from_bytes(b"n\xe9"));
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join(OsStr::from_bytes(b"caf\xe9.md")), "notes\n").unwrap();
    // certs/ holds inputs only in a serverless layout, which this repository is not.
    std::fs::create_dir_all(env.path("certs")).unwrap();
    std::fs::write(env.path("certs").join(OsStr::from_bytes(b"k\xe9y")), "k\n").unwrap();
    env.commit_all("notes whose names are not UTF-8");
    env.ok(&["plan"], 3);
    env.ok(&["plan", "--worktree"], 3);
    env.ok(&["apply"], 3);
    env.ok(&["apply", "--full-scan"], 3);
    env.ok(&["crl", "--force"], 0);
    // In the output folder gitca removes what it did not write: it cannot name such a file.
    let stray = env.path("issued").join(OsStr::from_bytes(b"x\xe9.pem"));
    std::fs::write(&stray, "stray\n").unwrap();
    env.commit_all("a stray output whose name is not UTF-8");
    refused(&["apply", "--full-scan"], "issued/x\u{fffd}.pem");
}

/// Requests whose outputs would collide are rejected (`output-path-conflict`), naming each
/// other, before anything is signed: `a.yaml` and `a.yml` would write one `a.pem` (before, the
/// last one won), and `a.yaml` beside `a.pem/x.yaml` would need a file and a folder at one path
/// (before, both were signed and every apply then failed on "D/F conflict"). A request added
/// beside an issued one is the one rejected: the issued one keeps its plan and its outputs, also
/// once the newcomer is renamed.
#[test]
fn requests_whose_outputs_collide_are_rejected() {
    let env = defect_ca();
    let request = |rel: &str, cn: &str| new_request(&env, rel, cn);
    let conflict = |plan: &serde_json::Value, id: &str, other: &str| {
        let r = plan_request(plan, id);
        assert_eq!(codes(r), ["output-path-conflict"], "{r}");
        assert!(r.to_string().contains(other), "{r}");
    };
    request("twin.yaml", "twin-a");
    request("twin.yml", "twin-b");
    request("nest.yaml", "nest");
    env.commit_all("colliding requests");
    let (plan, _) = env.plan_json(&[]);
    conflict(&plan, "requests/twin.yaml", "requests/twin.yml");
    conflict(&plan, "requests/twin.yml", "requests/twin.yaml");
    assert_eq!(plan_request(&plan, "requests/nest.yaml")["action"], "issue");
    env.ok(&["apply"], 3);
    assert!(!env.path("issued/twin.pem").exists());
    let nest = env.read("issued/nest.pem");
    // Beside an issued request: under its certificate's name, and under its own name.
    request("nest.pem/inner.yaml", "inner");
    request("nest.yml", "nest-b");
    env.commit_all("requests colliding with an issued one");
    let (plan, _) = env.plan_json(&[]);
    conflict(&plan, "requests/nest.pem/inner.yaml", "requests/nest.yaml");
    conflict(&plan, "requests/nest.yml", "requests/nest.yaml");
    assert_eq!(
        plan_request(&plan, "requests/nest.yaml")["action"],
        "unchanged"
    );
    env.ok(&["apply"], 3);
    assert_eq!(env.read("issued/nest.pem"), nest);
    // Renamed, the newcomers are issued; the issued request keeps its outputs.
    env.git(&["mv", "requests/nest.yml", "requests/nest-b.yaml"]);
    env.git(&["mv", "requests/nest.pem", "requests/inner"]);
    env.commit_all("renamed");
    env.ok(&["apply"], 3);
    assert_eq!(env.read("issued/nest.pem"), nest);
    assert!(env.path("issued/nest-b.pem").is_file());
    assert!(env.path("issued/inner/inner.pem").is_file());
    env.ok(&["verify"], 0);
    // A certificate named as another's chain file; removed, the holder's chain file stays.
    let chain = env.read("issued/nest.chain.pem");
    request("nest.chain.yaml", "nest-chain");
    env.commit_all("a request whose certificate is another's chain file");
    let (plan, _) = env.plan_json(&[]);
    conflict(&plan, "requests/nest.chain.yaml", "requests/nest.yaml");
    env.ok(&["apply"], 3);
    env.git(&["rm", "-q", "requests/nest.chain.yaml"]);
    env.commit_all("removed");
    env.ok(&["apply"], 3);
    assert_eq!(env.read("issued/nest.chain.pem"), chain);
    env.ok(&["verify"], 0);
    // Alone, a request so named is issued, and `verify` checks its certificate (it took
    // `lone.chain.pem` for a chain file and reported the certificate missing).
    request("lone.chain.yaml", "lone-chain");
    env.commit_all("a request named like a chain file");
    env.ok(&["apply"], 3);
    assert!(env.path("issued/lone.chain.chain.pem").is_file());
    env.ok(&["verify"], 0);
    // Two requests of one name, each with a live certificate (one replaced the other, which
    // came back): both are rejected and neither writes, so the file stays as committed.
    request("flip.yml", "flip-a");
    env.commit_all("flip.yml");
    env.ok(&["apply"], 3);
    env.git(&["mv", "requests/flip.yml", "requests/flip.yaml"]);
    request("flip.yaml", "flip-b");
    env.commit_all("flip.yml becomes flip.yaml, a new key");
    env.ok(&["apply"], 3);
    let flip = env.read("issued/flip.pem");
    request("flip.yml", "flip-a");
    env.commit_all("flip.yml back");
    let (plan, _) = env.plan_json(&[]);
    conflict(&plan, "requests/flip.yml", "requests/flip.yaml");
    conflict(&plan, "requests/flip.yaml", "requests/flip.yml");
    for _ in 0..2 {
        env.ok(&["apply", "--full-scan"], 3);
        assert_eq!(env.read("issued/flip.pem"), flip);
    }
    let issued_for = |id: &str| issued_for(&env, id);
    assert_eq!(
        issued_for("requests/twin.yaml") + issued_for("requests/twin.yml"),
        0
    );
    assert_eq!(issued_for("requests/nest.yaml"), 1);
}

/// A request removed in the commit that adds one in a folder named as its certificate
/// (`nest.yaml` going as `nest.pem/inner.yaml` comes), and then the other way round: the
/// outputs commit deletes a file and writes a folder of the same name. gitca signed the new
/// request, then refused every run ("issued/nest.pem is a file in the commit"); now each is
/// issued once and the repository stays clean and consistent.
#[test]
fn a_request_in_place_of_a_removed_ones_certificate_is_issued_once() {
    let env = defect_ca();
    let request = |rel: &str, cn: &str| new_request(&env, rel, cn);
    let issued_for = |id: &str| issued_for(&env, id);
    request("nest.yaml", "nest");
    env.commit_all("nest");
    env.ok(&["apply"], 3);
    assert!(env.path("issued/nest.pem").is_file());
    for (gone, new, output) in [
        (
            "nest.yaml",
            "nest.pem/inner.yaml",
            "issued/nest.pem/inner.pem",
        ),
        ("nest.pem", "nest.yaml", "issued/nest.pem"),
    ] {
        env.git(&["rm", "-q", "-r", &format!("requests/{gone}")]);
        if gone.ends_with(".yaml") {
            env.git(&["rm", "-q", "requests/nest.csr.pem"]);
        }
        request(new, "inner");
        env.commit_all(&format!("{gone} goes, {new} comes"));
        let before = issued_for(&format!("requests/{new}"));
        for _ in 0..2 {
            env.ok(&["apply"], 3);
        }
        assert!(env.path(output).is_file(), "{output}");
        assert_eq!(issued_for(&format!("requests/{new}")), before + 1, "{new}");
        assert_eq!(env.git(&["status", "--porcelain"]), "", "after {new}");
        env.ok(&["verify"], 0);
    }
}

/// A request whose CSR changes several times within one second (here at one `--now`): each
/// new certificate started in the same second as the ones before, and which of them a request
/// was served went by their random serials, so a later run often took an older one for
/// current and reissued, on every run within that second. Now a certificate starts a second
/// after the request's newest: each change is issued once.
#[test]
fn a_request_changed_within_one_second_is_issued_once_each_time() {
    let env = defect_ca();
    let csr = env.path("requests/quick.csr.pem");
    std::fs::write(
        env.path("requests/quick.yaml"),
        "csr: quick.csr.pem\nsans: {dns: [quick.test.example.com]}\n",
    )
    .unwrap();
    let issued_for_quick = || issued_for(&env, "requests/quick.yaml");
    for round in 1..=6 {
        new_p256_csr(&csr, "quick.test.example.com");
        env.commit_all(&format!("quick, key {round}"));
        for _ in 0..2 {
            env.ok(&["apply", "--now", "2026-12-01T00:00:00Z"], 3);
            assert_eq!(issued_for_quick(), round, "after the change to key {round}");
        }
    }
    env.ok(&["verify"], 0);
}

/// Near the CA's end, a request whose newest certificate was issued by a run with a clock ahead
/// of this one: its new certificate starts no later than now, and the plan checks the CA's end
/// against that start. The first fix of same-second starts followed the newest into the future,
/// and its plan and build disagreed on the start: the build refused the whole apply
/// ("notAfter … is beyond the CA certificate's notAfter"), so no other request was issued.
#[test]
fn a_request_whose_newest_starts_ahead_does_not_stop_the_apply() {
    let env = defect_ca();
    let end = tool_in(
        "openssl",
        &env.repo,
        &[
            "x509",
            "-in",
            "ca/ca.pem",
            "-noout",
            "-enddate",
            "-dateopt",
            "iso_8601",
        ],
    );
    let end = end.trim().trim_start_matches("notAfter=").replace(' ', "T");
    let end = time::OffsetDateTime::parse(&end, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{end}: {e}"));
    let at = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    // The last moment a 30-day certificate still fits, and 35 minutes before it.
    let ahead = end - time::Duration::days(30) + time::Duration::minutes(5);
    let now = ahead - time::Duration::minutes(35);
    let request = |name: &str| new_request(&env, &format!("{name}.yaml"), name);
    request("ahead");
    env.commit_all("ahead");
    env.ok(&["apply", "--now", &at(ahead)], 3);
    request("ahead");
    request("other");
    env.commit_all("a new key for ahead, and another request");
    env.ok(&["apply", "--now", &at(now)], 3);
    assert!(env.path("issued/other.pem").is_file());
    // The new certificate, beside the one dated ahead (which stays the one served until
    // this clock passes its start: the newest by start is served).
    let index = env.index("defect-ca");
    let starts: Vec<time::OffsetDateTime> = (index["certs"].as_object().unwrap().values())
        .filter(|c| c["request_id"] == "requests/ahead.yaml")
        .map(|c| {
            let t = c["not_before"].as_str().unwrap();
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        })
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(
        starts.iter().any(|t| *t <= now),
        "{starts:?}: none starts by {now}"
    );
}

/// The defect fixture repository with a single CA, without the fixture's own expectations,
/// README and revocations.
fn defect_ca() -> Env {
    let env = Env::from(
        &format!("{FIXTURES}/defect-repo"),
        &["expected.yaml", "README.md", "revocations.yaml"],
    );
    env.init(&["--single"]);
    env
}

/// Writes the request `requests/{rel}` for `{cn}.test.example.com`, with a new P-256 CSR
/// beside it, `{cn}.csr.pem`.
fn new_request(env: &Env, rel: &str, cn: &str) {
    let yaml = env.path(&format!("requests/{rel}"));
    std::fs::create_dir_all(yaml.parent().unwrap()).unwrap();
    let csr = yaml.parent().unwrap().join(format!("{cn}.csr.pem"));
    new_p256_csr(&csr, &format!("{cn}.test.example.com"));
    std::fs::write(
        &yaml,
        format!("csr: {cn}.csr.pem\nsans: {{dns: [{cn}.test.example.com]}}\n"),
    )
    .unwrap();
}

/// How many certificates the state holds for the request `id`.
fn issued_for(env: &Env, id: &str) -> usize {
    let index = env.index("defect-ca");
    (index["certs"].as_object().unwrap().values())
        .filter(|c| c["request_id"] == id)
        .count()
}

/// A run killed while it wrote the outputs leaves a certificate file cut short, with the index
/// and the branch not updated yet: every later run refused the file as an uncommitted change,
/// and it took a person to remove it. Now the next run writes it whole, without signing again.
/// (The kill is played by resetting the branch and the index to before a run's outputs commit
/// and cutting its new certificate in half.)
#[test]
fn an_output_cut_short_by_a_killed_run_is_written_whole() {
    let env = defect_ca();
    new_request(&env, "short.yaml", "short");
    env.commit_all("short");
    let requests = env.git(&["rev-parse", "HEAD"]);
    env.ok(&["apply"], 3);
    let pem = env.path("issued/short.pem");
    let whole = std::fs::read(&pem).unwrap();
    env.git(&["reset", "-q", "--mixed", requests.trim()]);
    std::fs::write(&pem, &whole[..whole.len() / 2]).unwrap();
    env.ok(&["apply"], 3);
    assert_eq!(std::fs::read(&pem).unwrap(), whole, "written whole");
    assert_eq!(
        issued_for(&env, "requests/short.yaml"),
        1,
        "not signed again"
    );
    assert_eq!(env.git(&["status", "--porcelain"]), "");
    env.ok(&["verify"], 0);
}
