//! `gitca status`: the inventory of issued certificates, for people (table), machines (JSON)
//! and spreadsheets (CSV); `--expiring-within` turns it into an alert for cron.

use super::context::{Context, parse_cert};
use super::outputs::{leaf_paths, load_certificates};
use crate::domain::names::Sans;
use crate::domain::plan::request_ids;
use crate::domain::state::Index;
use der::Decode;
use serde::Serialize;
use std::collections::BTreeSet;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    Valid,
    Expiring,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub request: String,
    pub serial: String,
    pub subject: String,
    pub sans: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub days_left: i64,
    pub state: CertState,
    /// The certificate the repository serves for a request that still exists.
    pub current: bool,
}

fn describe(cert: &Certificate) -> (String, Vec<String>) {
    let tbs = cert.tbs_certificate();
    let subject = tbs.subject().to_string();
    let sans = tbs
        .get_extension::<SubjectAltName>()
        .ok()
        .flatten()
        .and_then(|(_, s)| Sans::from_general_names(&s.0).ok())
        .map(|s| s.values())
        .unwrap_or_default();
    (subject, sans)
}

/// One row per certificate in the state; subject and SANs from the committed file when it is the
/// current one (no state read), otherwise from the state record.
pub async fn inventory(
    ctx: &Context,
    index: &Index,
    now: OffsetDateTime,
    window: time::Duration,
) -> Result<Vec<Row>, String> {
    let requests: BTreeSet<String> = request_ids(&ctx.snapshot, &ctx.config)?;
    let committed = ctx
        .repo
        .files_under(&ctx.snapshot.commit, &ctx.config.output.dir)?;
    // An alert must not fail open: a state that knows no certificate while the commit holds
    // issued ones is the wrong state (a mistyped GITCA_DATA_DIR or bucket), not an empty CA.
    // Only `.pem` files count: a README or .gitkeep in a new CA's output folder is none.
    let pems = committed.keys().filter(|p| p.ends_with(".pem")).count();
    if index.certs.is_empty() && pems > 0 {
        return Err(format!(
            "the state at {} holds no certificates, but {}/ in the commit holds {pems} .pem \
             file(s): is the state location right (GITCA_DATA_DIR, state: in gitca.yaml)?",
            ctx.store.describe(),
            ctx.config.output.dir,
        ));
    }
    let mut rows = Vec::new();
    let current_all = index.current_all();
    // Certificates the repository does not serve (superseded, expired, revoked) are described
    // from their records, fetched together: each round object is read once.
    let mut from_repo = Vec::with_capacity(index.certs.len());
    let mut need = Vec::new();
    for (serial, c) in &index.certs {
        let (leaf, _) = leaf_paths(&ctx.config.output.dir, &c.request_id);
        let described = committed
            .get(&leaf)
            .and_then(|b| parse_cert(&leaf, b).ok())
            .filter(|cert| {
                crate::domain::serial::is_serial(
                    cert.tbs_certificate().serial_number().as_bytes(),
                    serial,
                )
            })
            .map(|cert| describe(&cert));
        if described.is_none() {
            need.push(serial.as_str());
        }
        from_repo.push(described);
    }
    let mut recorded = load_certificates(ctx, index, &need).await?;
    for ((serial, c), described) in index.certs.iter().zip(from_repo) {
        let current = requests.contains(&c.request_id)
            && current_all
                .get(c.request_id.as_str())
                .is_some_and(|(s, _)| *s == serial);
        let (subject, sans) = match described {
            Some(d) => d,
            None => {
                let der = recorded
                    .remove(serial.as_str())
                    .expect("load_certificates returns every serial asked");
                describe(&Certificate::from_der(&der).map_err(|e| e.to_string())?)
            }
        };
        let state = if c.revoked.is_some() {
            CertState::Revoked
        } else if c.not_after <= now {
            CertState::Expired
        } else if c.not_after - now <= window {
            CertState::Expiring
        } else {
            CertState::Valid
        };
        rows.push(Row {
            request: c.request_id.clone(),
            serial: serial.clone(),
            subject,
            sans,
            not_before: c.not_before,
            not_after: c.not_after,
            days_left: (c.not_after - now).whole_days(),
            state,
            current,
        });
    }
    rows.sort_by(|a, b| (&a.request, a.not_before).cmp(&(&b.request, b.not_before)));
    Ok(rows)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn render(rows: &[Row], format: StatusFormat) -> String {
    let t = super::render::rfc3339;
    match format {
        StatusFormat::Json => serde_json::to_string_pretty(rows).unwrap_or_default(),
        StatusFormat::Csv => {
            let mut s = String::from(
                "request,serial,subject,sans,not_before,not_after,days_left,state,current\n",
            );
            for r in rows {
                s.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    csv_field(&r.request),
                    r.serial,
                    csv_field(&r.subject),
                    csv_field(&r.sans.join(" ")),
                    t(r.not_before),
                    t(r.not_after),
                    r.days_left,
                    serde_json::to_value(r.state)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    r.current
                ));
            }
            s
        }
        StatusFormat::Table => {
            let w = rows
                .iter()
                .map(|r| r.request.len())
                .max()
                .unwrap_or(7)
                .max(7);
            let mut s = format!(
                "{:<w$} {:<16} {:<9} {:>5} {:<20} SANS\n",
                "REQUEST", "SERIAL", "STATE", "DAYS", "NOT AFTER"
            );
            for r in rows {
                let state = serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                s.push_str(&format!(
                    "{:<w$} {:<16} {:<9} {:>5} {:<20} {}{}\n",
                    r.request,
                    r.serial.chars().take(16).collect::<String>(),
                    state,
                    r.days_left,
                    t(r.not_after),
                    r.sans.join(", "),
                    if r.current || r.state == CertState::Revoked {
                        ""
                    } else {
                        "  (superseded)"
                    }
                ));
            }
            s
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
    Csv,
}
