//! The ready-made policies in policies/ parse, and accept or reject exactly what their comments
//! claim (the table policies/cases.yaml).

use gitca::domain::csr::KeyKind;
use gitca::domain::duration::Span;
use gitca::domain::names::{Sans, Subject};
use gitca::domain::policy::{self, Candidate, Policy};
use std::collections::BTreeMap;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    policy: String,
    request_id: String,
    key: String,
    sans: Sans,
    #[serde(default)]
    common_name: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    usages: Option<Vec<String>>,
    #[serde(default)]
    lifetime: Option<Span>,
    #[serde(default)]
    extension_oids: Vec<String>,
    expect: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn key(k: &str) -> KeyKind {
    match k {
        "rsa1024" => KeyKind::Rsa { bits: 1024 },
        "rsa2048" => KeyKind::Rsa { bits: 2048 },
        "rsa3072" => KeyKind::Rsa { bits: 3072 },
        "p256" => KeyKind::P256,
        "p384" => KeyKind::P384,
        "p521" => KeyKind::P521,
        "ed25519" => KeyKind::Ed25519,
        other => panic!("unknown key {other}"),
    }
}

fn load() -> BTreeMap<String, Policy> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(DIR).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".yaml") && name != "cases.yaml" {
            let file = format!("policies/{name}");
            let pol = Policy::parse(&file, &std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{e}"));
            m.insert(pol.name.clone(), pol);
        }
    }
    m
}

#[test]
fn every_ready_made_policy_parses_and_has_cases() {
    let policies = load();
    assert!(policies.len() >= 4, "{:?}", policies.keys());
    let cases: Cases =
        serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{DIR}/cases.yaml")).unwrap())
            .unwrap();
    for name in policies.keys() {
        let n = cases.cases.iter().filter(|c| &c.policy == name).count();
        assert!(n >= 6, "policy {name} has only {n} cases");
        let accepted = cases
            .cases
            .iter()
            .any(|c| &c.policy == name && c.expect.is_empty());
        let rejected = cases
            .cases
            .iter()
            .any(|c| &c.policy == name && !c.expect.is_empty());
        assert!(
            accepted && rejected,
            "policy {name} needs accept and reject cases"
        );
    }
}

#[test]
fn ready_made_policies_decide_as_documented() {
    let policies = load();
    let cases: Cases =
        serde_yaml_ng::from_str(&std::fs::read_to_string(format!("{DIR}/cases.yaml")).unwrap())
            .unwrap();
    let mut failures = Vec::new();
    for (n, c) in cases.cases.iter().enumerate() {
        let p = &policies[&c.policy];
        assert!(
            p.selects_path(&c.request_id),
            "case {n}: {} does not select {}",
            c.policy,
            c.request_id
        );
        let cand = Candidate {
            subject: Subject {
                common_name: c.common_name.clone(),
                organization: c.organization.clone(),
                ..Default::default()
            },
            sans: c.sans.clone(),
            key: key(&c.key),
            lifetime: c.lifetime,
            usages: c
                .usages
                .clone()
                .unwrap_or_else(|| vec!["server_auth".into()]),
            extension_oids: c.extension_oids.clone(),
        };
        let v = policy::evaluate(p, &c.request_id, &cand, Span::days(30));
        let mut got: Vec<String> = v.findings.iter().map(|f| f.code.to_string()).collect();
        got.sort();
        got.dedup();
        let mut want = c.expect.clone();
        want.sort();
        if got != want {
            failures.push(format!(
                "case {n} ({} {}): want {want:?}, got {got:?}: {:?}",
                c.policy, c.request_id, v.findings
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
