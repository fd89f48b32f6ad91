//! Test harness: real git repositories in temp folders, the real gitca binary, and independent
//! verifiers (openssl, pkilint, x509-parser).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/example-repo");

/// The example without its revocations and its request rejected on purpose: every request
/// issues, so a run with nothing to do is recorded quiet.
pub const EXAMPLE_ALL_ISSUED: [&str; 3] = [
    "revocations.yaml",
    "requests/servers/rejected-outside-domain.yaml",
    "requests/servers/rejected-outside-domain.csr.pem",
];

pub mod moto;

/// A run a test started, killed should an assertion fail first (a run at a test point would
/// hang for an hour).
pub struct Started(pub std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Env {
    _tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub data: PathBuf,
    /// Extra environment for gitca (e.g. the AWS endpoint and credentials).
    pub vars: Vec<(String, String)>,
}

pub fn copy_tree(src: &Path, dst: &Path, exclude: &[&str]) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        let rel_s = rel.to_string_lossy();
        if exclude
            .iter()
            .any(|x| rel_s == *x || rel_s.starts_with(&format!("{x}/")))
        {
            continue;
        }
        let to = dst.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

impl Env {
    /// A fresh git repository holding a copy of `src` (minus `exclude`), committed on `main`.
    pub fn from(src: &str, exclude: &[&str]) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&repo).unwrap();
        copy_tree(Path::new(src), &repo, exclude);
        let env = Env {
            _tmp: tmp,
            repo,
            data,
            vars: Vec::new(),
        };
        env.git(&["init", "-q", "-b", "main"]);
        env.git(&["config", "user.name", "Test"]);
        env.git(&["config", "user.email", "test@example.com"]);
        env.commit_all("requests");
        env
    }

    /// Moves everything but `.git` into the folder `dir` (the CA then runs with `--dir dir`),
    /// adds an unrelated README at the root, and commits.
    pub fn move_ca_into(&self, dir: &str) {
        let moved = self.tmp().join("moved-ca");
        copy_tree(&self.repo, &moved, &[".git"]);
        for e in std::fs::read_dir(&self.repo).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().unwrap() == ".git" {
                continue;
            }
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap()
            } else {
                std::fs::remove_file(&p).unwrap()
            }
        }
        copy_tree(&moved, &self.path(dir), &[]);
        std::fs::write(self.path("README.md"), "unrelated\n").unwrap();
        self.commit_all(&format!("move the CA into {dir}/"));
    }

    pub fn tmp(&self) -> &Path {
        self._tmp.path()
    }

    /// A bare repository as `origin`, with `main` pushed and tracked; returns its path.
    pub fn bare_remote(&self) -> PathBuf {
        let remote = self.tmp().join("remote.git");
        git_in(
            self.tmp(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                remote.to_str().unwrap(),
            ],
        );
        self.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
        self.git(&["push", "-q", "-u", "origin", "main"]);
        remote
    }

    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.repo, args)
    }

    pub fn commit_all(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn gitca(&self, args: &[&str]) -> Output {
        self.gitca_in(&self.repo, args)
    }

    pub fn gitca_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.command_in(dir, args).output().unwrap()
    }

    pub fn command_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_gitca"));
        c.args(args)
            .current_dir(dir)
            .env("GITCA_DATA_DIR", &self.data)
            .env_remove("RUST_LOG")
            .env_remove("GITCA_THREADS");
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    /// Runs gitca, asserting its exit code; returns stdout.
    pub fn ok(&self, args: &[&str], code: i32) -> String {
        let o = self.gitca(args);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "gitca {args:?} exited {:?}\nstdout:\n{out}\nstderr:\n{err}",
            o.status.code()
        );
        out.into_owned()
    }

    pub fn init(&self, extra: &[&str]) {
        let mut a = vec!["init"];
        a.extend_from_slice(extra);
        self.ok(&a, 0);
    }

    pub fn plan_json(&self, extra: &[&str]) -> (serde_json::Value, i32) {
        let mut a = vec!["plan", "--format", "json"];
        a.extend_from_slice(extra);
        let o = self.gitca(&a);
        let code = o.status.code().unwrap();
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "plan output is not JSON ({e}): {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (v, code)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.repo.join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Rewrites a file of the repository's work tree with `change` of its content.
    pub fn edit(&self, rel: &str, change: impl FnOnce(String) -> String) {
        let changed = change(self.read(rel));
        std::fs::write(self.path(rel), changed).unwrap_or_else(|e| panic!("{rel}: {e}"));
    }

    pub fn state(&self, ca: &str) -> PathBuf {
        self.data.join(ca).join("state")
    }

    /// The state's index.json as JSON. Below 4,096 certificates (every test repository) it
    /// holds all of them; past that, those changed since its base.
    pub fn index(&self, ca: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.state(ca).join("index.json")).unwrap())
                .unwrap();
        assert!(
            v.get("base").is_none(),
            "the index names a base: read it too"
        );
        v
    }
}

/// The distinct finding codes of a plan entry's `field` (`findings` or `warnings`), sorted.
pub fn codes_in(entry: &serde_json::Value, field: &str) -> std::collections::BTreeSet<String> {
    entry[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

/// The entry of request `id` in a `plan --format json` document.
pub fn plan_request<'a>(plan: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    plan["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in the plan"))
}

pub fn git_in(dir: &Path, args: &[&str]) -> String {
    tool_in("git", dir, args)
}

/// A certificate file's serial as openssl prints it (upper-case hex, no `serial=`).
pub fn openssl_serial(path: &Path) -> String {
    let out = tool_in(
        "openssl",
        Path::new("."),
        &["x509", "-noout", "-serial", "-in", &path.to_string_lossy()],
    );
    out.trim().trim_start_matches("serial=").to_string()
}

/// The output of `tool args` run in `dir`, which must succeed.
pub fn tool_in(tool: &str, dir: &Path, args: &[&str]) -> String {
    let o = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// True if `tool` can run. Outside CI a missing tool skips the test with a visible message;
/// with CI set it fails, so CI can never pass without the real verifier.
pub fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--help").output().is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required in CI but was not found on PATH");
        }
        // Written to the stderr handle, not eprintln!, so the test harness does not capture it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {tool} not found on PATH (install it, e.g. via .ci/run, to run this check)"
        );
    }
    found
}

/// Writes a new P-256 CSR for `/CN=common_name` to `path`, its key thrown away (openssl).
pub fn new_p256_csr(path: &Path, common_name: &str) {
    let o = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null"])
        .arg("-subj")
        .arg(format!("/CN={common_name}"))
        .arg("-out")
        .arg(path)
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `openssl verify -crl_check` of `leaf` against root + intermediates + CRL. Returns (ok, output).
pub fn openssl_verify(
    root: &Path,
    untrusted: Option<&Path>,
    crl: &Path,
    leaf: &Path,
) -> (bool, String) {
    let mut c = Command::new("openssl");
    c.args(["verify", "-crl_check", "-CAfile"]).arg(root);
    if let Some(u) = untrusted {
        c.arg("-untrusted").arg(u);
    }
    c.arg("-CRLfile").arg(crl).arg(leaf);
    let o = c.output().expect("openssl");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Runs a pkilint command; returns its combined output, asserting it ran.
pub fn pkilint(args: &[&str], file: &Path) -> (bool, String) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .arg(file)
        .output()
        .expect("pkilint");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success() && out.trim().is_empty(), out)
}

/// Leaf certificate files (not chains) under a folder.
pub fn leaf_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.path().to_path_buf())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "pem")
                && !p.to_string_lossy().ends_with(".chain.pem")
        })
        .collect();
    v.sort();
    v
}
