//! `plan` and `apply` on a repository of the serverless CA as it is (`certs/<env>/tls.json`),
//! driven by tests/fixtures/serverless-ca/expected.yaml: in `mode: strict` every request the
//! serverless CA would have fixed silently is rejected with the matching finding; in
//! `mode: compatible` it is issued as the serverless CA issued it (checked in the certificate
//! with x509-parser and openssl), with a warning. `revoked.json` serials gitca did not issue are
//! the previous CA's, listed on gitca's CRL only when asked.

mod common;
use common::*;
use gitca::domain::serverless::slug;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

#[derive(Debug, Deserialize)]
struct Expected {
    fixtures: BTreeMap<String, Fixture>,
}

#[derive(Debug, Deserialize)]
struct Fixture {
    assumed_serverless_config: ServerlessConfig,
    requests: Vec<Req>,
}

#[derive(Debug, Deserialize)]
struct ServerlessConfig {
    max_cert_lifetime: u64,
    #[serde(default)]
    custom_extension_allowlist: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Req {
    env: String,
    common_name: String,
    dns: Vec<String>,
    ip: Vec<IpAddr>,
    email: Vec<String>,
    uri: Vec<String>,
    lifetime_days: i64,
    problems: Vec<String>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(format!("{FIXTURES}/serverless-ca/expected.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The finding a problem of the fixture becomes in gitca's plan.
fn finding_for(problem: &str) -> &'static str {
    match problem {
        "san-invalid" | "san-type-unknown" | "sans-shape-invalid" => "serverless-san-dropped",
        "purpose-unknown" | "eku-unknown" => "serverless-usage-dropped",
        "san-type-unsupported" => "serverless-not-supported",
        "lifetime-clamped" => "lifetime-too-long",
        other => panic!("fixture problem {other} has no mapping"),
    }
}

const SERVERLESS_CODES: [&str; 4] = [
    "serverless-entry-invalid",
    "serverless-san-dropped",
    "serverless-usage-dropped",
    "serverless-not-supported",
];

/// A git repository holding the fixture as-is plus a gitca.yaml that reads it in place.
fn repo(fixture: &str, cfg: &ServerlessConfig, serverless_extra: &str) -> Env {
    let env = Env::from(&format!("{FIXTURES}/serverless-ca/{fixture}"), &[]);
    let allow = serde_json::to_string(&cfg.custom_extension_allowlist).unwrap();
    std::fs::write(
        env.path("gitca.yaml"),
        format!(
            "ca: {{name: sl, certificate: ca/ca.pem}}\n\
             output: {{dir: issued, crl: crl/sl.crl, bundle: ca/bundle.pem}}\n\
             serverless:\n  max_lifetime_days: {}\n  extension_allowlist: {allow}\n{serverless_extra}",
            cfg.max_cert_lifetime
        ),
    )
    .unwrap();
    env.commit_all("gitca.yaml reading the serverless layout in place");
    env.init(&[]);
    env.commit_all("CA certificate");
    env
}

fn id(r: &Req) -> String {
    format!("certs/{}/{}", r.env, slug(&r.common_name))
}

#[test]
fn strict_mode_rejects_every_silent_fix_with_its_finding() {
    let all = expected();
    // Clean requests issued, over both fixtures (lossy has none): the loop checks something.
    let mut issued = 0;
    for name in ["basic", "lossy"] {
        let fx = &all.fixtures[name];
        let env = repo(name, &fx.assumed_serverless_config, "  mode: strict\n");
        let (plan, code) = env.plan_json(&[]);
        assert_eq!(code, 3, "{name}: the lossy requests are rejected: {plan}");
        for r in &fx.requests {
            let p = plan_request(&plan, &id(r));
            let found = codes_in(p, "findings");
            if r.problems.is_empty() {
                // gitca has no subject emailAddress: the one thing it refuses in a clean entry.
                let email_only = p["findings"].as_array().into_iter().flatten().all(|f| {
                    f["code"] != "serverless-not-supported"
                        || f["message"].as_str().unwrap().contains("emailAddress")
                });
                assert!(
                    email_only
                        && found.iter().all(|c| {
                            !SERVERLESS_CODES.contains(&c.as_str())
                                || c == "serverless-not-supported"
                        }),
                    "{name} {}: clean, but {p}",
                    r.common_name
                );
                assert!(codes_in(p, "warnings").is_empty());
            } else {
                assert_eq!(p["action"], "rejected", "{name} {}: {p}", r.common_name);
                for problem in &r.problems {
                    assert!(
                        found.contains(finding_for(problem)),
                        "{name} {}: {problem} should be {}, got {found:?}",
                        r.common_name,
                        finding_for(problem)
                    );
                }
            }
        }
        // Nothing is signed from a plan that rejects, but the clean requests are issued.
        let clean: Vec<&Req> = fx
            .requests
            .iter()
            .filter(|r| r.problems.is_empty())
            .collect();
        env.ok(&["apply"], 3);
        for r in clean {
            let p = plan_request(&plan, &id(r));
            if p["action"] == "issue" {
                assert!(
                    env.path(&format!("issued/{}.pem", id(r))).exists(),
                    "{name}: {} issued",
                    id(r)
                );
                issued += 1;
            }
        }
    }
    assert!(
        issued > 0,
        "the clean requests of the basic fixture are issued"
    );
}

#[test]
fn compatible_mode_issues_what_the_serverless_ca_issued_and_warns() {
    let all = expected();
    let fx = &all.fixtures["lossy"];
    let env = repo(
        "lossy",
        &fx.assumed_serverless_config,
        "  mode: compatible\n",
    );
    let (plan, _) = env.plan_json(&[]);
    let mut issued = 0;
    for r in &fx.requests {
        let p = plan_request(&plan, &id(r));
        let found = codes_in(p, "findings");
        let warned = codes_in(p, "warnings");
        for problem in &r.problems {
            let f = finding_for(problem);
            assert!(
                !found.contains(f),
                "{}: {f} is only a warning",
                r.common_name
            );
            assert!(warned.contains(f), "{}: warns {f}: {p}", r.common_name);
        }
        if p["action"] == "issue" {
            issued += 1;
        }
    }
    assert!(
        issued >= 5,
        "most lossy requests issue in compatible mode: {plan}"
    );
    let text = env.ok(&["plan"], 2);
    assert!(text.contains("warning"), "{text}");

    env.ok(&["apply"], 0);
    let ca = env.path("ca/ca.pem");
    let crl = env.path("crl/sl.crl.pem");
    for r in &fx.requests {
        if plan_request(&plan, &id(r))["action"] != "issue" {
            continue;
        }
        let leaf = env.path(&format!("issued/{}.pem", id(r)));
        if have("openssl") {
            let (ok, out) = openssl_verify(&ca, None, &crl, &leaf);
            assert!(ok, "{}: {out}", leaf.display());
        }
        let pem = std::fs::read(&leaf).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der.contents).unwrap();
        let v = cert.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86400;
        assert_eq!(days, r.lifetime_days, "{}: lifetime", r.common_name);
        let (mut dns, mut ip, mut email, mut uri) = (vec![], vec![], vec![], vec![]);
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            use x509_parser::extensions::GeneralName as G;
            for n in &san.value.general_names {
                match n {
                    G::DNSName(d) => dns.push(d.to_string()),
                    G::IPAddress(b) => ip.push(match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                        _ => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                    }),
                    G::RFC822Name(e) => email.push(e.to_string()),
                    G::URI(u) => uri.push(u.to_string()),
                    other => panic!("{}: unexpected SAN {other:?}", r.common_name),
                }
            }
        }
        let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
        assert_eq!(set(&dns), set(&r.dns), "{}: DNS SANs", r.common_name);
        assert_eq!(
            ip.iter().collect::<BTreeSet<_>>(),
            r.ip.iter().collect::<BTreeSet<_>>(),
            "{}: IP SANs",
            r.common_name
        );
        assert_eq!(set(&email), set(&r.email), "{}: email SANs", r.common_name);
        assert_eq!(set(&uri), set(&r.uri), "{}: URI SANs", r.common_name);
    }
    env.ok(&["verify"], 0);
    // A second run has nothing to do: the in-place requests are stable.
    let (plan, code) = env.plan_json(&[]);
    assert!(
        plan["requests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] != "issue" && r["action"] != "reissue"),
        "{plan}"
    );
    assert_eq!(code, 0, "nothing left to do");
}

/// revoked.json serials the serverless CA issued are shown, not rejected; with
/// `revoke_previous_serials` they go on gitca's CRL; a serial gitca issued is revoked as usual;
/// an entry removed from revoked.json stops the run (revocations are append-only).
#[test]
fn revoked_json_serials_of_the_previous_ca_and_of_gitca() {
    let all = expected();
    let fx = &all.fixtures["basic"];
    let env = repo("basic", &fx.assumed_serverless_config, "  mode: strict\n");
    let (plan, _) = env.plan_json(&[]);
    let revs = plan["revocations"].as_array().unwrap();
    assert_eq!(revs.len(), 1, "{plan}");
    assert_eq!(revs[0]["action"], "previous_ca", "{plan}");
    assert!(codes_in(&revs[0], "findings").is_empty());
    env.ok(&["apply"], 3);
    let crl_text = |env: &Env| {
        let o = std::process::Command::new("openssl")
            .args(["crl", "-noout", "-text", "-in"])
            .arg(env.path("crl/sl.crl.pem"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_uppercase()
    };
    // 1234567890123456789 = 0x112210F47DE98115
    let previous_serial = "112210F47DE98115";
    if have("openssl") {
        assert!(!crl_text(&env).contains(previous_serial));
    }

    // gitca takes over the serverless CA's key: its revoked serials go on gitca's CRL.
    env.edit("gitca.yaml", |cfg| {
        format!("{cfg}  revoke_previous_serials: true\n")
    });
    // And a certificate gitca issued in place is revoked through revoked.json, as before.
    let idx = env.index("sl");
    let (serial, _) = idx["certs"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, c)| c["request_id"] == "certs/dev/api.dev.example.com")
        .expect("api.dev.example.com was issued");
    let decimal = hex_to_decimal(serial);
    // gitca removes a revoked certificate's files; keep a copy to verify against the CRL.
    let api = env.tmp().join("api.pem");
    std::fs::copy(env.path("issued/certs/dev/api.dev.example.com.pem"), &api).unwrap();
    std::fs::write(
        env.path("certs/dev/revoked.json"),
        format!(
            r#"[{{"common_name": "orders-service", "serial_number": "1234567890123456789"}},
                {{"common_name": "api.dev.example.com", "serial_number": "{decimal}"}},
                {{"common_name": "short", "serial_number": "2748"}}]"#
        ),
    )
    .unwrap();
    env.commit_all("take over the serverless CA's key; revoke api");
    let (plan, _) = env.plan_json(&[]);
    let revs = plan["revocations"].as_array().unwrap();
    assert_eq!(revs[0]["action"], "revoke", "{plan}");
    assert_eq!(revs[0]["previous_ca"], true);
    assert_eq!(revs[1]["action"], "revoke");
    assert!(revs[1].get("previous_ca").is_none());
    env.ok(&["apply"], 3);
    if have("openssl") {
        let text = crl_text(&env);
        assert!(text.contains(previous_serial), "{text}");
        let (ok, out) = openssl_verify(
            &env.path("ca/ca.pem"),
            None,
            &env.path("crl/sl.crl.pem"),
            &api,
        );
        assert!(!ok && out.contains("certificate revoked"), "{out}");
    }
    let idx = env.index("sl");
    assert!(
        idx["previous_ca"]
            .as_object()
            .unwrap()
            .contains_key("112210f47de98115")
    );
    // Defect `verify-previous-serial-leading-zero`: 2748 = 0xabc, listed as 0ABC (a whole
    // byte) while the state keeps "abc"; verify reported it missing from the CRL.
    env.ok(&["verify"], 0);
    // Nothing more to revoke on the next run.
    let (plan, _) = env.plan_json(&[]);
    assert!(
        plan["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] == "already_revoked"),
        "{plan}"
    );

    // Defect `previous-serial-over-20-bytes`: a serial no CRL entry can hold (2^160) was
    // recorded, and signing every CRL after failed. It is refused in the plan, naming it.
    let listed = env.read("certs/dev/revoked.json");
    let over = r#"{"common_name": "huge", "serial_number": "1461501637330902918203684832716283019655932542976"}"#;
    std::fs::write(
        env.path("certs/dev/revoked.json"),
        format!("{}, {over}]", listed.trim_end().trim_end_matches(']')),
    )
    .unwrap();
    env.commit_all("a serial over 20 bytes");
    let (plan, _) = env.plan_json(&[]);
    let huge = &plan["revocations"].as_array().unwrap()[3];
    assert_eq!(huge["action"], "rejected", "{plan}");
    assert_eq!(
        codes_in(huge, "findings"),
        ["revocation-invalid".to_string()].into()
    );
    assert!(huge.to_string().contains("20 bytes"), "{huge}");
    env.ok(&["apply"], 3);
    env.ok(&["crl", "--force"], 0);

    // Removing an entry is refused: a revoked certificate stays revoked.
    std::fs::write(env.path("certs/dev/revoked.json"), "[]").unwrap();
    env.commit_all("drop the revocations");
    let o = env.gitca(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("certs/dev/revoked.json") && err.contains("append-only"),
        "{err}"
    );
}

/// A tls.json that is not a JSON list stops the run with its name: every request of the
/// environment would otherwise look removed.
#[test]
fn broken_tls_json_stops_the_run_and_names_the_file() {
    let all = expected();
    let env = repo(
        "basic",
        &all.fixtures["basic"].assumed_serverless_config,
        "",
    );
    std::fs::write(env.path("certs/dev/tls.json"), "[{\"common_name\": ").unwrap();
    env.commit_all("broken tls.json");
    let o = env.gitca(&["plan"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("certs/dev/tls.json"), "{err}");
    let o = env.gitca(&["apply"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!env.path("issued").exists(), "nothing was issued");
}

/// Found by review: read in place, a CSR's subject emailAddress (which the serverless CA copies
/// into the certificate) was left out silently in `mode: strict`, where the docs promise
/// `serverless-not-supported`; only `gitca import` noted it.
#[test]
fn a_csr_subject_email_is_not_supported_in_place() {
    let all = expected();
    for (mode, action, field) in [
        ("strict", "rejected", "findings"),
        ("compatible", "issue", "warnings"),
    ] {
        let env = repo(
            "basic",
            &all.fixtures["basic"].assumed_serverless_config,
            &format!("  mode: {mode}\n"),
        );
        let o = std::process::Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout", "/dev/null"])
            .args([
                "-subj",
                "/CN=api.dev.example.com/emailAddress=ops@example.com",
            ])
            .arg("-out")
            .arg(env.path("certs/dev/csrs/api-dev.csr"))
            .output()
            .expect("openssl runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        env.commit_all("a CSR with a subject emailAddress");
        let (plan, _) = env.plan_json(&[]);
        let p = plan_request(&plan, &format!("certs/dev/{}", slug("api.dev.example.com")));
        assert_eq!(p["action"], action, "{mode}: {p}");
        let noted = p[field].as_array().into_iter().flatten().any(|f| {
            f["code"] == "serverless-not-supported"
                && f["message"]
                    .as_str()
                    .unwrap()
                    .contains("CSR's subject emailAddress")
        });
        assert!(noted, "{mode}: {p}");
    }
}

/// The multi-environment repository: `serverless.env` picks the environment this CA takes over.
#[test]
fn one_environment_per_ca() {
    let env = repo(
        "multi-env",
        &ServerlessConfig {
            max_cert_lifetime: 365,
            custom_extension_allowlist: vec![],
        },
        "  env: prd\n",
    );
    let (plan, _) = env.plan_json(&[]);
    let ids: Vec<&str> = plan["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|i| i.starts_with("certs/prd/")), "{ids:?}");
}

fn hex_to_decimal(hex: &str) -> String {
    let mut digits: Vec<u8> = vec![0];
    for c in hex.chars() {
        let mut carry = c.to_digit(16).unwrap();
        for d in digits.iter_mut() {
            let v = *d as u32 * 16 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    while digits.len() > 1 && digits.last() == Some(&0) {
        digits.pop();
    }
    digits.iter().rev().map(|d| (b'0' + d) as char).collect()
}
