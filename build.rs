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

/// Every file under `src/` and `Cargo.lock`, by path and content. The hash need not be stable
/// across compilers: a different one only costs one full plan.
fn build_id() {
    use std::hash::{Hash, Hasher};
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut files = vec![std::path::PathBuf::from("Cargo.lock")];
    let mut dirs = vec![std::path::PathBuf::from("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        f.hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    println!(
        "cargo:rustc-env=GITCA_BUILD_ID={}+{:016x}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        h.finish()
    );
}
