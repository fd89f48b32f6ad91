//! Tells the code the symbol prefix of the AWS-LC that aws-lc-rs links (`aws_lc_<version>_`),
//! so `domain::fixed_key` can call the P-256 arithmetic that AWS-LC's own verify uses.
//! aws-lc-sys declares `links = "aws_lc_<version>"`, so its metadata reaches this script as
//! `DEP_AWS_LC_<version>_*` variables.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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
