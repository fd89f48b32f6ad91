//! Tells the code which build it is (`GITCA_BUILD_ID`: the version and a hash of the sources
//! and the lock file), so a plan basis or quiet record written under other plan rules is not
//! trusted, even when the version did not change.
//!
//! Tells the code the symbol prefix of the AWS-LC that aws-lc-rs links (`aws_lc_<version>_`),
//! so `domain::fixed_key` can call the P-256 arithmetic that AWS-LC's own verify uses.
//! aws-lc-sys declares `links = "aws_lc_<version>"`, so its metadata reaches this script as
//! `DEP_AWS_LC_<version>_*` variables.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    build_id();
    let mut prefixes: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix("DEP_AWS_LC_")?;
            let mut parts = rest.splitn(4, '_');
            let version: Vec<&str> = parts.by_ref().take(3).collect();
            (version.len() == 3 && version.iter().all(|p| p.parse::<u32>().is_ok()))
                .then(|| format!("aws_lc_{}_", version.join("_")))
        })
        .collect();
    prefixes.sort();
    prefixes.dedup();
    match prefixes.as_slice() {
        [one] => println!("cargo:rustc-env=GITCA_AWS_LC_PREFIX={one}"),
        other => panic!(
            "expected the metadata of exactly one aws-lc-sys (a direct dependency), found {other:?}"
        ),
    }
}

/// Every `.rs` file under `src/`, `Cargo.toml` and `Cargo.lock`, by path and content (line
/// ends as LF, so a checkout with CRLF gives the same id). SHA-256, so every toolchain that
/// builds the same sources gives the same id: two builds alternating on one repository would
/// otherwise each distrust the other's records and plan in full every run.
fn build_id() {
    use sha2::{Digest, Sha256};
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut files = vec![
        std::path::PathBuf::from("Cargo.toml"),
        std::path::PathBuf::from("Cargo.lock"),
    ];
    let mut dirs = vec![std::path::PathBuf::from("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let text = std::fs::read(f).unwrap_or_default();
        let text: Vec<u8> = text.into_iter().filter(|&b| b != b'\r').collect();
        h.update(f.to_string_lossy().replace('\\', "/").as_bytes());
        h.update([0]);
        h.update((text.len() as u64).to_le_bytes());
        h.update(&text);
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "cargo:rustc-env=GITCA_BUILD_ID={}+{hex}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}
