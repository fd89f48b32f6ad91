//! Plan and apply output: a human table, JSON for machines, Markdown for PR comments.

use super::apply::ApplyOutcome;
use crate::domain::plan::{Action, Plan, RequestPlan, RevocationAction};
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// Shown for a `revoked.json` serial gitca did not issue and does not list.
const PREVIOUS_CA: &str = "not issued by gitca: it stays on the serverless CA's CRL (set serverless.revoke_previous_serials if gitca signs with that CA's key)";

/// Shown for a revocation a plan without the state cannot check.
const UNCHECKED: &str = "not checked: this plan has no state (--no-state), so it cannot tell which certificates the entry names; apply checks it";

/// Shown for a rejected request that still has a live certificate (e.g. after a policy change).
const NO_LONGER_ALLOWED: &str = " (its current certificate is no longer allowed; it stays valid until it expires or is revoked)";

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Issue => "issue",
        Action::Reissue => "reissue",
        Action::Renew => "renew",
        Action::Unchanged => "unchanged",
        Action::Rejected => "REJECTED",
        Action::Revoked => "revoked",
    }
}

fn rev_word(a: RevocationAction) -> &'static str {
    match a {
        RevocationAction::Revoke => "revoke",
        RevocationAction::AlreadyRevoked => "already revoked",
        RevocationAction::Rejected => "REJECTED",
        RevocationAction::PreviousCa => "previous CA",
        RevocationAction::Unchecked => "not checked",
    }
}

/// Certificates the apply revokes: by a revocation entry, as superseded by their request's new
/// certificate, or as orphans of a removed request. A reviewer reads this count, so it holds
/// all three, each serial once.
fn to_revoke(p: &Plan) -> usize {
    let by_entry = (p.revocations.iter())
        .filter(|r| r.action == RevocationAction::Revoke)
        .flat_map(|r| &r.serials);
    let superseded = p.requests.iter().flat_map(|r| &r.supersede);
    let orphaned = p
        .orphans
        .iter()
        .filter(|o| o.revoke)
        .flat_map(|o| &o.serials);
    let serials: std::collections::HashSet<&String> =
        by_entry.chain(superseded).chain(orphaned).collect();
    serials.len()
}

fn counts(p: &Plan) -> String {
    let n = |a: Action| p.requests.iter().filter(|r| r.action == a).count();
    let revocations = |a: RevocationAction| p.revocations.iter().filter(|r| r.action == a).count();
    let mut s = format!(
        "{} to issue, {} to reissue, {} to renew, {} unchanged, {} rejected, {} certificate(s) to revoke",
        n(Action::Issue),
        n(Action::Reissue),
        n(Action::Renew),
        n(Action::Unchanged),
        n(Action::Rejected),
        to_revoke(p),
    );
    for (a, what) in [
        (RevocationAction::Rejected, "revocation(s) rejected"),
        (
            RevocationAction::Unchecked,
            "revocation(s) not checked (no state)",
        ),
    ] {
        if revocations(a) > 0 {
            s.push_str(&format!(", {} {what}", revocations(a)));
        }
    }
    if p.crl_due.is_some() {
        s.push_str(", CRL due");
    }
    s
}

/// Writes the pretty JSON of `value` (holding `requests` at `depth`), byte for byte what
/// `serde_json::to_writer_pretty` writes. At 100,000 requests the listing is most of the output
/// (22 MB), so a long one is rendered in pieces on all cores: `value` is rendered with the
/// requests taken out, and they are written in its place as they come, never all held at once.
fn write_pretty_with_requests<T: serde::Serialize>(
    value: &mut T,
    requests: impl Fn(&mut T) -> &mut Vec<RequestPlan>,
    depth: usize,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    use rayon::prelude::*;
    /// Requests per piece (about 220 KB of text): a 10,000 issuance's listing took 10 ms on one
    /// core in one piece.
    const PIECE: usize = 1024;
    let whole = |value: &T, out: &mut dyn Write| {
        serde_json::to_writer_pretty(out, value).map_err(std::io::Error::other)
    };
    if requests(value).len() < 2 * PIECE {
        return whole(value, out);
    }
    let list = std::mem::take(requests(value));
    let rest = serde_json::to_string_pretty(value).map_err(std::io::Error::other);
    *requests(value) = list;
    let rest = rest?;
    // The plan's commit id is the only string before the requests; it cannot hold this.
    const EMPTY: &str = "\"requests\": []";
    let Some(at) = rest.find(EMPTY).map(|i| i + EMPTY.len() - 2) else {
        return whole(value, out);
    };
    // A piece is a whole array, `[\n  {..},\n  {..}\n]`: its elements, indented `depth` levels
    // deeper. No newline occurs inside a JSON string, so each one starts a line.
    let indent = "  ".repeat(depth);
    let newline = format!("\n{indent}");
    out.write_all(&rest.as_bytes()[..at])?;
    out.write_all(b"[\n")?;
    // A piece per core at a time.
    let batch = PIECE * rayon::current_num_threads().max(1);
    for (b, requests) in requests(value).chunks(batch).enumerate() {
        let pieces: Vec<std::io::Result<String>> = requests
            .par_chunks(PIECE)
            .map(|piece| {
                let text = serde_json::to_string_pretty(piece).map_err(std::io::Error::other)?;
                let elements = &text[2..text.len() - 2];
                Ok(format!("{indent}{}", elements.replace('\n', &newline)))
            })
            .collect();
        for (n, piece) in pieces.into_iter().enumerate() {
            if b + n > 0 {
                out.write_all(b",\n")?;
            }
            out.write_all(piece?.as_bytes())?;
        }
    }
    out.write_all(newline.as_bytes())?;
    out.write_all(b"]")?;
    out.write_all(&rest.as_bytes()[at + 2..])
}

/// What a writer into memory got, as text (JSON is UTF-8).
fn written(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> String {
    let mut bytes = Vec::new();
    match write(&mut bytes) {
        Ok(()) => String::from_utf8(bytes).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

pub fn plan(p: &mut Plan, f: Format) -> String {
    match f {
        Format::Json => written(|out| write_plan(p, f, out)),
        Format::Text => plan_text(p),
        Format::Markdown => plan_markdown(p),
    }
}

/// Writes the plan to `out`; JSON without holding all of it in memory.
pub fn write_plan(p: &mut Plan, f: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match f {
        Format::Json => write_pretty_with_requests(p, |p| &mut p.requests, 1, out),
        _ => out.write_all(plan(p, f).as_bytes()),
    }
}

fn short(s: &Option<String>) -> String {
    s.as_deref()
        .map(|s| s.chars().take(16).collect())
        .unwrap_or_default()
}

/// Characters a reader does not see, or that reorder what follows (bidirectional controls,
/// zero-width ones): a name holding them could read as another.
fn is_hidden(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// A name or message in the text table: control characters (git allows a newline in a file
/// name) and hidden ones written as escapes, so one request is one line and reads as itself.
fn plain(text: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c.is_control() || is_hidden(c);
    match text.chars().any(escaped) {
        false => text.into(),
        true => (text.chars())
            .flat_map(|c| match escaped(c) {
                true => c.escape_default().collect::<Vec<_>>(),
                false => vec![c],
            })
            .collect::<String>()
            .into(),
    }
}

fn plan_text(p: &Plan) -> String {
    let w = p
        .requests
        .iter()
        .map(|r| plain(&r.id).len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut s = format!(
        "gitca plan for commit {}\n\n{:<10} {:<w$} {:<16} {}\n",
        p.commit, "ACTION", "REQUEST", "SERIAL", "DETAIL"
    );
    for r in &p.requests {
        let detail = if r.findings.is_empty() {
            r.policy
                .as_ref()
                .map(|p| format!("policy {p}"))
                .unwrap_or_default()
        } else {
            r.findings
                .iter()
                .map(|f| format!("[{}] {}", f.code, f.message))
                .collect::<Vec<_>>()
                .join("; ")
        };
        s.push_str(&format!(
            "{:<10} {:<w$} {:<16} {}{}\n",
            action_word(r.action),
            plain(&r.id),
            short(&r.serial),
            plain(&detail),
            if r.live_certificate_no_longer_allowed {
                NO_LONGER_ALLOWED
            } else {
                ""
            }
        ));
        for warn in &r.warnings {
            s.push_str(&format!(
                "{:<10} {:<w$} {:<16} [{}] {}\n",
                "warning",
                plain(&r.id),
                "",
                warn.code,
                plain(&warn.message)
            ));
        }
        for serial in &r.supersede {
            let serial = Some(serial.clone());
            s.push_str(&format!(
                "{:<10} {:<w$} {:<16} superseded\n",
                "revoke",
                plain(&r.id),
                short(&serial)
            ));
        }
    }
    if !p.revocations.is_empty() {
        s.push_str("\nREVOCATIONS\n");
        for r in &p.revocations {
            let detail = if r.action == RevocationAction::PreviousCa {
                PREVIOUS_CA.to_string()
            } else if r.action == RevocationAction::Unchecked {
                UNCHECKED.to_string()
            } else if r.findings.is_empty() {
                format!(
                    "{} serial(s) {}{}",
                    r.serials.len(),
                    r.serials.join(", "),
                    if r.previous_ca {
                        " (issued by the previous CA)"
                    } else {
                        ""
                    }
                )
            } else {
                r.findings
                    .iter()
                    .map(|f| format!("[{}] {}", f.code, f.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            s.push_str(&format!(
                "{:<16} {}#{} {} {}\n",
                rev_word(r.action),
                plain(&r.file),
                r.index,
                plain(&r.entry),
                plain(&detail)
            ));
        }
    }
    for o in &p.orphans {
        s.push_str(&format!(
            "orphaned   {} (request removed; {} live certificate(s){})\n",
            plain(&o.request_id),
            o.serials.len(),
            if o.revoke {
                ", will be revoked"
            } else {
                ", left valid until expiry"
            }
        ));
    }
    for w in &p.warnings {
        s.push_str(&format!("warning    {}\n", plain(&w.to_string())));
    }
    if let Some(c) = &p.crl_due {
        s.push_str(&format!("\nCRL: a new CRL is due ({c})\n"));
    }
    s.push_str(&format!("\nSummary: {}\n", counts(p)));
    s
}

/// Text for a Markdown table cell, as written: file names and messages come from the
/// repository under review, and a `|`, a line break or Markdown in a request's name must not
/// split the table or add a heading ("Approved by security") to the PR comment. Anything but
/// letters, digits and plain punctuation is written as a character reference.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            // Invisible or reordering characters stay visible as escapes: a character
            // reference would decode to them.
            c if is_hidden(c) => out.extend(c.escape_unicode()),
            c if c.is_alphanumeric() && !c.is_control() => out.push(c),
            ' ' | '/' | '.' | '-' | ',' | ':' | '=' | '(' | ')' | '"' | '\'' => out.push(c),
            c => out.push_str(&format!("&#{};", c as u32)),
        }
    }
    out
}

/// A name in code style: as an HTML `<code>` element, since a Markdown code span would show
/// the character references of [`md`] as written.
fn md_code(text: &str) -> String {
    format!("<code>{}</code>", md(text))
}

fn plan_markdown(p: &Plan) -> String {
    let mut s = format!(
        "### gitca plan for `{}`\n\n{}\n\n",
        &p.commit.chars().take(12).collect::<String>(),
        counts(p)
    );
    // Unchanged requests are counted above, not listed: a PR comment is cut at 60,000
    // characters, and in a large repository the unchanged rows would push the changes out.
    let mut listed: Vec<_> = p
        .requests
        .iter()
        .filter(|r| {
            r.action != Action::Unchanged || !r.findings.is_empty() || !r.warnings.is_empty()
        })
        .collect();
    // Rejections first: they fail the check, and must not be cut off by a long list.
    listed.sort_by_key(|r| r.action != Action::Rejected);
    if !listed.is_empty() {
        s.push_str("| Action | Request | Policy | Details |\n| --- | --- | --- | --- |\n");
    }
    let unlisted = p.requests.len() - listed.len();
    for r in listed {
        let mut detail = r
            .findings
            .iter()
            .map(|f| format!("`{}` {}", f.code, md(&f.message)))
            .chain(
                r.warnings
                    .iter()
                    .map(|w| format!(":warning: `{}` {}", w.code, md(&w.message))),
            )
            .collect::<Vec<_>>()
            .join("<br>");
        if r.live_certificate_no_longer_allowed {
            detail.push_str(&format!(
                "<br>**{}**",
                NO_LONGER_ALLOWED
                    .trim_start_matches(" (")
                    .trim_end_matches(')')
            ));
        }
        if !r.supersede.is_empty() {
            detail.push_str(&format!(
                "<br>revokes the certificate(s) it supersedes: {}",
                md(&r.supersede.join(", "))
            ));
        }
        let icon = match r.action {
            Action::Rejected => ":x: rejected",
            Action::Unchanged => "unchanged",
            a => action_word(a),
        };
        s.push_str(&format!(
            "| {icon} | {} | {} | {detail} |\n",
            md_code(&r.id),
            md(r.policy.as_deref().unwrap_or_default())
        ));
    }
    if unlisted > 0 {
        s.push_str(&format!(
            "\n{unlisted} unchanged request(s) not listed (`gitca plan` shows them all).\n"
        ));
    }
    if !p.revocations.is_empty() {
        s.push_str("\n| Revocation | Entry | Serials | Details |\n| --- | --- | --- | --- |\n");
        for r in &p.revocations {
            let mut detail = r
                .findings
                .iter()
                .map(|f| format!("`{}` {}", f.code, md(&f.message)))
                .collect::<Vec<_>>()
                .join("<br>");
            if r.action == RevocationAction::PreviousCa {
                detail = PREVIOUS_CA.to_string();
            }
            if r.action == RevocationAction::Unchecked {
                detail = UNCHECKED.to_string();
            }
            s.push_str(&format!(
                "| {} | {} | {} | {detail} |\n",
                rev_word(r.action),
                md_code(&r.entry),
                md(&r.serials.join(", "))
            ));
        }
    }
    if !p.orphans.is_empty() {
        s.push_str("\n| Removed request | Live certificates | Outcome |\n| --- | --- | --- |\n");
        for o in &p.orphans {
            s.push_str(&format!(
                "| {} | {} | {} |\n",
                md_code(&o.request_id),
                md(&o.serials.join(", ")),
                if o.revoke {
                    "revoked (cessation of operation)"
                } else {
                    "left valid until expiry (orphans.revoke is off)"
                }
            ));
        }
    }
    for w in &p.warnings {
        s.push_str(&format!(
            "\n:warning: `{}` {}: {}\n",
            w.code,
            md_code(&w.file),
            md(&w.message)
        ));
    }
    if let Some(c) = &p.crl_due {
        s.push_str(&format!("\nA new CRL is due: {}.\n", md(c)));
    }
    s
}

/// Writes the outcome to `out`; JSON without holding all of it in memory.
pub fn write_applied(o: &mut ApplyOutcome, f: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match f {
        Format::Json => write_pretty_with_requests(o, |o| &mut o.plan.requests, 2, out),
        _ => out.write_all(applied(o, f).as_bytes()),
    }
}

pub fn applied(o: &mut ApplyOutcome, f: Format) -> String {
    match f {
        Format::Json => written(|out| write_applied(o, f, out)),
        _ => {
            let mut s = plan(&mut o.plan, f);
            s.push_str("\nApplied:\n");
            for i in &o.issued {
                s.push_str(&format!(
                    "  {:<8} {} serial {} (until {})\n",
                    action_word(i.action),
                    plain(&i.request_id),
                    i.serial,
                    rfc3339(i.not_after)
                ));
            }
            for r in &o.revoked {
                s.push_str(&format!("  revoked  serial {r}\n"));
            }
            if let Some(n) = o.crl_number {
                s.push_str(&format!("  CRL number {n} signed\n"));
            }
            if o.recovered + o.abandoned > 0 {
                s.push_str(&format!(
                    "  completed {} and dropped {} intent(s) of an interrupted run\n",
                    o.recovered, o.abandoned
                ));
            }
            s.push_str(&match &o.commit {
                Some(c) => format!(
                    "  committed {c}{}\n",
                    if o.pushed { " and pushed" } else { "" }
                ),
                None => "  nothing to commit\n".to_string(),
            });
            if !o.published.is_empty() {
                s.push_str(&format!("  published {}\n", o.published.join(", ")));
            }
            s.push_str(&format!("  {} signature(s)\n", o.signatures));
            if o.signer.calls > 0 {
                s.push_str(&format!(
                    "  KMS: {} call(s), {} retried\n",
                    o.signer.calls, o.signer.retries
                ));
            }
            s.push_str(&format!(
                "  planned {} request(s) in full, carried {} unchanged ({} plan{})\n",
                o.scan.read,
                o.scan.carried,
                o.scan.kind,
                o.scan
                    .reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
            s.push_str(&format!("  {:.2}s\n", o.seconds));
            s
        }
    }
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::RequestPlan;

    fn request(id: &str, action: Action) -> RequestPlan {
        RequestPlan {
            policy: Some("p".into()),
            ..RequestPlan::new(id.into(), action)
        }
    }

    /// Rendered in pieces, the JSON of a plan and of an apply is what serde writes, byte for
    /// byte: below, at and above the size where the listing is split, with findings, warnings,
    /// superseded serials and the fields after the requests set.
    #[test]
    fn json_rendered_in_pieces_is_the_json_serde_writes() {
        use crate::domain::finding::{Code, Finding};
        use crate::domain::plan::Orphan;
        for n in [0, 1, 2047, 2048, 2049, 5000] {
            let requests: Vec<RequestPlan> = (0..n)
                .map(|k| {
                    let mut r = request(&format!("requests/a/r{k:06}.yaml"), Action::Unchanged);
                    if k % 5 == 0 {
                        r.action = Action::Rejected;
                        r.findings =
                            vec![Finding::new(Code::KeyReuse, &r.id, "a \"quoted\"\nline")];
                    }
                    if k % 7 == 0 {
                        r.warnings = vec![Finding::new(Code::KeyReuse, &r.id, "w")];
                        r.supersede = vec!["0a".into(), "0b".into()];
                        r.serial = Some(format!("{k:040x}"));
                        r.not_after = Some(time::macros::datetime!(2026-12-01 00:00 UTC));
                    }
                    r
                })
                .collect();
            let mut p = Plan {
                commit: "0123456789abcdef".into(),
                requests,
                orphans: vec![Orphan {
                    request_id: "requests/gone.yaml".into(),
                    serials: vec!["0c".into()],
                    revoke: true,
                }],
                crl_due: Some("first CRL".into()),
                ..Default::default()
            };
            // Two threads, so that 5,000 requests take three batches on any machine.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let expected = serde_json::to_string_pretty(&p).unwrap();
            assert!(
                pool.install(|| plan(&mut p, Format::Json)) == expected,
                "plan of {n}"
            );
            assert_eq!(p.requests.len(), n, "the requests are put back");
            let mut o = ApplyOutcome {
                plan: p,
                revoked: vec!["0d".into()],
                commit: Some("abc".into()),
                ..Default::default()
            };
            let expected = serde_json::to_string_pretty(&o).unwrap();
            assert!(
                pool.install(|| applied(&mut o, Format::Json)) == expected,
                "apply of {n}"
            );
            assert_eq!(o.plan.requests.len(), n, "the requests are put back");
        }
    }

    /// Defect `markdown-injection-by-file-name`: a request named `p|q.yaml` split the PR
    /// comment's table, and one whose name held blank lines and `## Approved by security team`
    /// put that heading into the comment (and a line of its own into the text table).
    #[test]
    fn names_and_messages_cannot_break_out_of_their_cell() {
        use crate::domain::finding::{Code, Finding};
        let evil = "requests/servers/p|q`x\n\n## Approved by security team\n\n[ok](http://x) @org/team \u{202E}lmth.yaml";
        let mut r = request(evil, Action::Rejected);
        r.findings = vec![Finding::new(
            Code::KeyReuse,
            evil,
            format!("{evil} | *bold*"),
        )];
        let mut p = Plan {
            commit: "0123456789abcdef".into(),
            requests: vec![r, request("requests/servers/ok.yaml", Action::Issue)],
            ..Default::default()
        };
        let md = plan(&mut p, Format::Markdown);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 4, "header, rule, two requests: {md}");
        for row in &rows[2..] {
            assert_eq!(row.matches('|').count(), 5, "{row}");
        }
        assert!(
            !md.lines()
                .any(|l| l.starts_with('#') && l.contains("Approved")),
            "{md}"
        );
        for raw in ["](", "*bold*", "`x", "@org", "\u{202E}"] {
            assert!(!md.contains(raw), "{raw} written as is: {md}");
        }
        assert!(md.contains("requests/servers/ok.yaml"), "{md}");
        let text = plan(&mut p, Format::Text);
        assert!(
            !text.lines().any(|l| l.starts_with("## Approved")),
            "{text}"
        );
        assert!(text.contains("\\n\\n## Approved"), "escaped: {text}");
        assert!(
            !text.contains('\u{202E}') && text.contains("\\u{202e}"),
            "{text}"
        );
    }

    #[test]
    fn markdown_lists_changes_and_counts_unchanged_requests() {
        let mut requests: Vec<RequestPlan> = (0..5000)
            .map(|n| request(&format!("requests/a/r{n:05}.yaml"), Action::Unchanged))
            .collect();
        requests.push(request("requests/y/new.yaml", Action::Issue));
        requests.push(request("requests/z/bad.yaml", Action::Rejected));
        let mut p = Plan {
            commit: "0123456789abcdef".into(),
            requests,
            ..Default::default()
        };
        let md = plan(&mut p, Format::Markdown);
        let (bad, new) = (
            md.find("requests/z/bad.yaml"),
            md.find("requests/y/new.yaml"),
        );
        assert!(bad.is_some() && bad < new, "rejections listed first: {md}");
        assert!(!md.contains("r00000"), "unchanged rows are not listed");
        assert!(md.contains("5000 unchanged request(s) not listed"), "{md}");
        assert!(md.len() < 60_000, "fits a PR comment: {}", md.len());
        // The text table still lists every request.
        assert!(plan(&mut p, Format::Text).contains("requests/a/r00000.yaml"));
    }

    /// Defect `plan-hides-orphan-and-superseded-revocations`: the PR comment listed neither a
    /// removed request's certificates to be revoked nor those a reissue supersedes, and both
    /// summaries said "0 revocation(s) to publish" while the apply would revoke them.
    #[test]
    fn every_certificate_to_revoke_is_counted_and_shown() {
        use crate::domain::plan::{Orphan, RevocationPlan};
        let mut reissued = request("requests/a/web.yaml", Action::Reissue);
        reissued.supersede = vec!["0a".into()];
        let mut p = Plan {
            commit: "0123456789abcdef".into(),
            requests: vec![reissued, request("requests/a/db.yaml", Action::Unchanged)],
            revocations: vec![RevocationPlan {
                action: RevocationAction::Revoke,
                // 0a also superseded: one certificate, counted once.
                serials: vec!["0b".into(), "0a".into()],
                entry: "serial 0b".into(),
                file: "revocations.yaml".into(),
                index: 0,
                reason: None,
                date: None,
                findings: vec![],
                previous_ca: false,
                parsed: None,
            }],
            orphans: vec![
                Orphan {
                    request_id: "requests/a/gone.yaml".into(),
                    serials: vec!["0c".into(), "0d".into()],
                    revoke: true,
                },
                Orphan {
                    request_id: "requests/a/kept.yaml".into(),
                    serials: vec!["0e".into()],
                    revoke: false,
                },
            ],
            ..Default::default()
        };
        for f in [Format::Text, Format::Markdown] {
            let out = plan(&mut p, f);
            assert!(out.contains("4 certificate(s) to revoke"), "{f:?}: {out}");
        }
        let md = plan(&mut p, Format::Markdown);
        let row = |text: &str| md.lines().find(|l| l.contains(text)).unwrap_or_default();
        assert!(row("web.yaml").contains("supersedes: 0a"), "{md}");
        assert!(row("gone.yaml").contains("0c, 0d"), "{md}");
        assert!(row("gone.yaml").contains("revoked"), "{md}");
        assert!(row("kept.yaml").contains("left valid"), "{md}");
    }
}
