//! Imports each serverless-CA fixture (tests/fixtures/serverless-ca/) and checks the result
//! against tests/fixtures/serverless-ca/expected.yaml: every request present with the expected
//! SANs, usages, lifetime, subject and extensions; every expected problem reported as a note;
//! the generated files parse, and gitca's own policy evaluation of each imported request gives
//! exactly the findings the notes announce.
//!
//! Problem codes: the importer uses the fixture's codes unchanged (see `FIXTURE_CODES`). Notes
//! of other codes are gitca-side differences or information (e.g. `cn-not-in-sans`,
//! `purposes-defaulted`); they may appear on requests the fixture calls clean, but no note of
//! kind "problem" may.

use gitca::app::import::{ImportOptions, ImportReport, NoteKind, import};
use gitca::domain::csr::check_csr;
use gitca::domain::duration::Span;
use gitca::domain::names::{Subject, join_relative};
use gitca::domain::policy::{Candidate, Policy, evaluate, select};
use gitca::domain::request::RequestFile;
use gitca::domain::revocation::parse_file;
use gitca::domain::serverless::{NOTE_CODES, code};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// expected.yaml problem code -> note code (the same strings, by design).
const FIXTURE_CODES: [(&str, &str); 7] = [
    ("san-invalid", code::SAN_INVALID),
    ("san-type-unknown", code::SAN_TYPE_UNKNOWN),
    ("san-type-unsupported", code::SAN_TYPE_UNSUPPORTED),
    ("sans-shape-invalid", code::SANS_SHAPE_INVALID),
    ("purpose-unknown", code::PURPOSE_UNKNOWN),
    ("eku-unknown", code::EKU_UNKNOWN),
    ("lifetime-clamped", code::LIFETIME_CLAMPED),
];

#[derive(Debug, Deserialize)]
struct Expected {
    version: u32,
    fixtures: BTreeMap<String, Fixture>,
}

#[derive(Debug, Deserialize)]
struct Fixture {
    assumed_serverless_config: Config,
    requests: Vec<Req>,
    #[serde(default)]
    revocations: Vec<Rev>,
}

#[derive(Debug, Deserialize)]
struct Config {
    max_cert_lifetime: u64,
}

#[derive(Debug, Deserialize)]
struct Req {
    env: String,
    common_name: String,
    csr_file: String,
    dns: Vec<String>,
    ip: Vec<String>,
    email: Vec<String>,
    uri: Vec<String>,
    usages: Vec<String>,
    lifetime_days: u64,
    subject: BTreeMap<String, String>,
    extensions: Vec<Ext>,
    problems: Vec<String>,
    #[serde(default)]
    dropped: Vec<Dropped>,
}

#[derive(Debug, Deserialize)]
struct Ext {
    oid: String,
    value_b64: String,
    critical: bool,
}

#[derive(Debug, Deserialize)]
struct Dropped {
    field: String,
    value: serde_yaml_ng::Value,
}

#[derive(Debug, Deserialize)]
struct Rev {
    env: String,
    file: String,
    common_name: String,
    serial_number: String,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serverless-ca")
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixtures_dir().join("expected.yaml")).unwrap();
    let e: Expected = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(e.version, 1);
    e
}

fn set<T: Ord + Clone>(v: &[T]) -> BTreeSet<T> {
    v.iter().cloned().collect()
}

fn run(name: &str, dest: &Path, clamp: bool) -> (ImportReport, Fixture) {
    let mut e = expected();
    let fx = e.fixtures.remove(name).unwrap();
    let options = ImportOptions {
        max_lifetime_days: fx.assumed_serverless_config.max_cert_lifetime,
        clamp_lifetime: clamp,
        only_env: None,
    };
    let report = import(&fixtures_dir().join(name), dest, options).unwrap();
    (report, fx)
}

fn check_fixture(name: &str) {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("out");
    let (report, fx) = run(name, &dest, false);
    let src = fixtures_dir().join(name);

    for n in &report.notes {
        assert!(
            NOTE_CODES.iter().any(|(c, _, _)| *c == n.code),
            "undocumented note code {}",
            n.code
        );
    }
    assert_eq!(report.counts.not_imported, 0, "{:#?}", report.notes);
    assert_eq!(report.requests.len(), fx.requests.len());

    let envs: BTreeSet<&str> = fx.requests.iter().map(|r| r.env.as_str()).collect();
    let policies: Vec<Policy> = envs
        .iter()
        .map(|env| {
            let file = format!("policies/imported-{env}.yaml");
            let text = std::fs::read_to_string(dest.join(&file)).unwrap();
            Policy::parse(&file, &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
        })
        .collect();

    let vocabulary: BTreeSet<&str> = FIXTURE_CODES.iter().map(|(_, c)| *c).collect();
    for want in &fx.requests {
        let who = format!("{name}/{}/{}", want.env, want.common_name);
        let found: Vec<_> = report
            .requests
            .iter()
            .filter(|r| r.env == want.env && r.common_name == want.common_name)
            .collect();
        assert_eq!(found.len(), 1, "{who}: {:#?}", report.requests);
        let summary = found[0];
        let text = std::fs::read_to_string(dest.join(&summary.id)).unwrap();
        let req = RequestFile::parse(&text).unwrap_or_else(|e| panic!("{who}: {e}\n{text}"));

        // The CSR is copied next to the request, unchanged, and the request names it.
        assert_eq!(
            summary.csr_source,
            format!("certs/{}/csrs/{}", want.env, want.csr_file)
        );
        assert_eq!(join_relative(&summary.id, &req.csr).unwrap(), summary.csr);
        let csr_bytes = std::fs::read(dest.join(&summary.csr)).unwrap();
        assert_eq!(
            csr_bytes,
            std::fs::read(src.join(&summary.csr_source)).unwrap()
        );
        let csr = check_csr(&csr_bytes).unwrap();

        let notes: Vec<_> = report
            .notes
            .iter()
            .filter(|n| n.env == want.env && n.common_name == want.common_name)
            .collect();
        let codes: BTreeSet<&str> = notes.iter().map(|n| n.code).collect();
        let problems: BTreeSet<&str> = codes.intersection(&vocabulary).copied().collect();
        let expected_problems: BTreeSet<&str> = want
            .problems
            .iter()
            .map(|p| {
                FIXTURE_CODES
                    .iter()
                    .find(|(f, _)| f == p)
                    .unwrap_or_else(|| panic!("unmapped fixture code {p}"))
                    .1
            })
            .collect();
        assert_eq!(problems, expected_problems, "{who}: {notes:#?}");
        if want.problems.is_empty() {
            let p: Vec<_> = notes
                .iter()
                .filter(|n| n.kind() == NoteKind::Problem)
                .collect();
            assert!(p.is_empty(), "{who}: clean in the fixture: {p:#?}");
        }

        let sans = req.sans.clone().expect("sans are always written");
        assert_eq!(set(&sans.dns), set(&want.dns), "{who}");
        let ips: BTreeSet<IpAddr> = want.ip.iter().map(|i| i.parse().unwrap()).collect();
        assert_eq!(set(&sans.ip), ips, "{who}");
        assert_eq!(set(&sans.email), set(&want.email), "{who}");
        assert_eq!(set(&sans.uri), set(&want.uri), "{who}");
        assert_eq!(set(&req.usages()), set(&want.usages), "{who}");

        // Without clamping the requested lifetime is kept (gitca rejects, never clamps).
        let clamped = codes.contains(code::LIFETIME_CLAMPED);
        let want_days = if clamped {
            want.dropped
                .iter()
                .find(|d| d.field == "lifetime")
                .and_then(|d| d.value.as_u64())
                .unwrap()
        } else {
            want.lifetime_days
        };
        assert_eq!(req.lifetime, Some(Span::days(want_days)), "{who}");

        // Subject: the request's values over the CSR's, as the serverless CA merges them;
        // gitca has no emailAddress attribute, which must be reported.
        let merged = Subject::from_name(&csr.subject, &Subject::default())
            .unwrap()
            .merged(req.subject.as_ref().unwrap());
        let mut got = BTreeMap::new();
        for (k, v) in [
            ("common_name", &merged.common_name),
            ("country", &merged.country),
            ("state", &merged.state),
            ("locality", &merged.locality),
            ("organization", &merged.organization),
            ("organizational_unit", &merged.organizational_unit),
        ] {
            if let Some(v) = v {
                got.insert(k.to_string(), v.clone());
            }
        }
        let mut want_subject = want.subject.clone();
        if want_subject.remove("email_address").is_some() {
            assert!(codes.contains(code::SUBJECT_EMAIL_DROPPED), "{who}");
        }
        assert_eq!(got, want_subject, "{who}");

        let exts: Vec<(String, String, bool)> = req
            .extensions
            .iter()
            .map(|x| (x.oid.clone(), x.value.clone(), x.critical))
            .collect();
        let want_exts: Vec<(String, String, bool)> = want
            .extensions
            .iter()
            .map(|x| (x.oid.clone(), x.value_b64.clone(), x.critical))
            .collect();
        assert_eq!(exts, want_exts, "{who}");

        // gitca's verdict under the generated policy: only what the notes announce.
        let policy = select(&policies, &summary.id, req.policy.as_deref())
            .unwrap_or_else(|f| panic!("{who}: {f}"));
        let verdict = evaluate(
            policy,
            &summary.id,
            &Candidate {
                subject: merged.clone(),
                sans: sans.clone(),
                key: csr.key,
                lifetime: req.lifetime,
                usages: req.usages(),
                extension_oids: req.extensions.iter().map(|x| x.oid.clone()).collect(),
            },
            Span::days(30),
        );
        let findings: BTreeSet<&str> = verdict.findings.iter().map(|f| f.code.as_str()).collect();
        let mut announced = BTreeSet::new();
        if codes.contains(code::CN_NOT_IN_SANS) {
            announced.insert("cn-not-in-sans");
        }
        if clamped {
            announced.insert("lifetime-too-long");
        }
        assert_eq!(findings, announced, "{who}: {:#?}", verdict.findings);
    }

    // Revocations: recorded as comments, by decimal serial and reason, each noted; no entry,
    // which every plan would reject (found by review: every pull request's check failed).
    let revocations = dest.join("revocations.yaml");
    if fx.revocations.is_empty() {
        assert!(!revocations.exists());
    } else {
        let text = std::fs::read_to_string(&revocations).unwrap();
        let entries = parse_file("revocations.yaml", &text).unwrap();
        assert!(entries.is_empty(), "{text}");
        for want in &fx.revocations {
            assert_eq!(want.file, "revoked.json");
            let serial = format!("serial {:?}", want.serial_number);
            assert!(
                text.lines().any(|l| l.starts_with('#')
                    && l.contains(&serial)
                    && l.contains("unspecified")),
                "{want:?}\n{text}"
            );
            assert!(
                report
                    .notes
                    .iter()
                    .any(|n| n.code == code::REVOCATION_REASON_UNSPECIFIED
                        && n.env == want.env
                        && n.common_name == want.common_name)
            );
        }
    }
    assert_eq!(
        report
            .notes
            .iter()
            .any(|n| n.code == code::REVOCATION_NOT_IN_GITCA_STATE),
        !fx.revocations.is_empty()
    );
    assert_eq!(
        report.notes.iter().any(|n| n.code == code::ENVS_MERGED),
        envs.len() > 1
    );

    // The report lists every note.
    let md = std::fs::read_to_string(dest.join("IMPORT-REPORT.md")).unwrap();
    for n in &report.notes {
        assert!(md.contains(&format!("`{}`", n.code)), "{}", n.code);
    }
    serde_json::to_string(&report).unwrap();

    // Clamping writes what the serverless CA issued; gitca then accepts the lifetimes.
    let (clamped, fx) = run(name, &t.path().join("clamped"), true);
    for want in &fx.requests {
        let s = clamped
            .requests
            .iter()
            .find(|r| r.env == want.env && r.common_name == want.common_name)
            .unwrap();
        let text = std::fs::read_to_string(t.path().join("clamped").join(&s.id)).unwrap();
        let req = RequestFile::parse(&text).unwrap();
        assert_eq!(req.lifetime, Some(Span::days(want.lifetime_days)));
    }

    // Importing again into the same destination is refused.
    let again = import(&src, &dest, ImportOptions::default()).unwrap_err();
    assert!(again.contains("refusing to overwrite"), "{again}");
}

#[test]
fn basic() {
    check_fixture("basic");
}

#[test]
fn multi_env() {
    check_fixture("multi-env");
}

#[test]
fn lossy() {
    check_fixture("lossy");
}

#[test]
fn every_fixture_is_checked() {
    let names: BTreeSet<String> = expected().fixtures.into_keys().collect();
    assert_eq!(
        names,
        BTreeSet::from(["basic".into(), "lossy".into(), "multi-env".into()])
    );
}

/// Every import note code is documented in docs/import.md with its kind.
#[test]
fn every_import_note_code_is_documented() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/import.md")).unwrap();
    for (code, kind, _) in gitca::domain::serverless::NOTE_CODES {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{code}` |")))
            .unwrap_or_else(|| panic!("{code} is not documented"));
        let kind = format!("{kind:?}").to_lowercase();
        assert!(
            row.contains(&kind),
            "{code}: documented without its kind {kind}: {row}"
        );
    }
}
