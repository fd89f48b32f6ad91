//! `gitca import`: converts a "serverless CA on AWS" GitOps repository into gitca's files.
//!
//! Reads `certs/<env>/tls.json`, the CSRs, `revoked.json` and `revoked-root-ca.json` from the
//! file system (a checkout, not a commit: the source is not a gitca repository), and writes
//! `requests/<env>/*.yaml` with their CSRs, `policies/imported-<env>.yaml`, `revocations.yaml`
//! and `IMPORT-REPORT.md` into the destination. Existing files are never overwritten: the whole
//! import is refused before anything is written.

use crate::domain::csr::check_csr;
use crate::domain::serverless::{
    self, Conversion, CsrSource, ImportedRequest, ImportedRevocation, NOTE_CODES, code,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

pub use crate::domain::serverless::{ImportNote, ImportOptions, NoteKind};

/// Source files larger than this are not read (gitca refuses CSRs far smaller anyway).
const MAX_SOURCE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What an import did, for the CLI (text or JSON) and `IMPORT-REPORT.md`.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub source: String,
    pub dest: String,
    /// The environments read (folders of `certs/`).
    pub envs: Vec<String>,
    pub requests: Vec<RequestSummary>,
    pub revocations: Vec<ImportedRevocation>,
    /// Files written, relative to the destination.
    pub files: Vec<String>,
    pub notes: Vec<ImportNote>,
    pub counts: ImportCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestSummary {
    pub env: String,
    pub common_name: String,
    /// The request id (`requests/<env>/<slug>.yaml`).
    pub id: String,
    /// The CSR's new path.
    pub csr: String,
    /// The CSR's path in the source, or `base64_csr_data`.
    pub csr_source: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    /// tls.json entries read.
    pub entries: usize,
    /// Requests written.
    pub requests: usize,
    /// Entries not imported (each has a note saying why).
    pub not_imported: usize,
    pub revocations: usize,
    pub notes: usize,
    pub problems: usize,
    pub differences: usize,
    pub info: usize,
}

/// Imports the serverless-CA repository at `source` into `dest` (created if needed).
pub fn import(source: &Path, dest: &Path, options: ImportOptions) -> Result<ImportReport, String> {
    let certs = source.join("certs");
    if !is_real_dir(&certs) {
        return Err(format!(
            "{}: no certs/ folder; not a serverless CA GitOps repository",
            source.display()
        ));
    }
    let root = fs::canonicalize(source).map_err(|e| format!("{}: {e}", source.display()))?;

    let mut envs = Vec::new();
    let mut notes: Vec<ImportNote> = Vec::new();
    let mut linked = Vec::new();
    for e in WalkDir::new(&certs)
        .min_depth(1)
        .max_depth(1)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| format!("{}: {e}", certs.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_dir() {
            envs.push(name);
        } else if e.file_type().is_symlink() {
            // Links are not followed (as for CSRs), but an environment must not vanish unsaid.
            notes.push(ImportNote::new(
                code::ENV_INVALID,
                &name,
                "",
                format!("certs/{name:?} is a symbolic link; import reads no links; skipped"),
            ));
            linked.push(name);
        }
    }
    if let Some(only) = &options.only_env {
        if linked.contains(only) {
            return Err(format!(
                "{}: environment {only:?} is a symbolic link; import reads no links",
                certs.display()
            ));
        }
        if !envs.contains(only) {
            return Err(format!(
                "{}: no environment {only:?} (found: {})",
                certs.display(),
                envs.join(", ")
            ));
        }
        envs.retain(|e| e == only);
        notes.clear();
    }

    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut requests = Vec::new();
    let mut revocations = Vec::new();
    let mut counts = ImportCounts::default();
    let mut envs_with_requests = Vec::new();

    for env in &envs {
        let dir = certs.join(env);
        let tls = read_list(&root, env, "tls.json", &mut notes)?;
        let conv: Conversion = serverless::convert(env, &tls, &options);
        notes.extend(conv.notes.iter().cloned());
        if !serverless::valid_env_name(env) {
            // Skipped means skipped: its revocations too (its name went into YAML comments).
            continue;
        }
        let mut kept: Vec<&ImportedRequest> = Vec::new();
        let mut key_types = Vec::new();
        // Every CSR named in tls.json, imported or not, so only truly stray files are noted.
        let referenced: BTreeSet<String> = tls
            .iter()
            .filter_map(|v| v.get("csr_file")?.as_str())
            .map(|f| format!("certs/{env}/csrs/{f}"))
            .collect();
        for entry in &conv.entries {
            counts.entries += 1;
            let mut entry_notes = entry.notes.clone();
            let mut written = false;
            if let Some(req) = &entry.request {
                let (bytes, csr_source) = match &req.csr_from {
                    CsrSource::File(rel) => (read_source_file(&root, rel), rel.clone()),
                    CsrSource::Inline(b) => (Ok(b.clone()), "base64_csr_data".to_string()),
                };
                match bytes {
                    Err(m) => entry_notes.push(ImportNote::new(
                        code::CSR_MISSING,
                        env,
                        &entry.common_name,
                        format!("{m}; not imported"),
                    )),
                    Ok(bytes) => {
                        csr_notes(env, entry, &bytes, &mut key_types, &mut entry_notes);
                        outputs.push((req.id.clone(), request_yaml(env, entry, req)?));
                        outputs.push((req.csr_to.clone(), bytes));
                        requests.push(RequestSummary {
                            env: env.clone(),
                            common_name: entry.common_name.clone(),
                            id: req.id.clone(),
                            csr: req.csr_to.clone(),
                            csr_source,
                        });
                        kept.push(req);
                        written = true;
                    }
                }
            }
            if written {
                counts.requests += 1;
            } else {
                counts.not_imported += 1;
            }
            notes.extend(entry_notes);
        }

        let csrs = dir.join("csrs");
        if is_real_dir(&csrs) {
            for e in WalkDir::new(&csrs).sort_by_file_name() {
                let e = e.map_err(|e| format!("{}: {e}", csrs.display()))?;
                if !e.file_type().is_file() {
                    continue;
                }
                let rel = e
                    .path()
                    .strip_prefix(source)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .replace('\\', "/");
                if !referenced.contains(&rel) {
                    notes.push(ImportNote::new(
                        code::CSR_UNREFERENCED,
                        env,
                        "",
                        format!("{rel} is named by no tls.json entry; not imported"),
                    ));
                }
            }
        }

        if let Some(policy) = serverless::policy_for(env, &kept, &key_types) {
            let name = serverless::policy_name(env);
            let yaml = serde_yaml_ng::to_string(&policy).map_err(|e| e.to_string())?;
            let text = format!(
                "# Generated by `gitca import` from certs/{env}/tls.json: allows exactly what was imported.\n\
                 # Review before merging; see IMPORT-REPORT.md.\n{yaml}"
            );
            outputs.push((format!("policies/{name}.yaml"), text.into_bytes()));
            envs_with_requests.push(env.clone());
        }

        let revoked = read_list(&root, env, "revoked.json", &mut notes)?;
        let (r, n) = serverless::convert_revocations(env, &revoked);
        revocations.extend(r);
        notes.extend(n);
        let root_revoked = read_list(&root, env, "revoked-root-ca.json", &mut notes)?;
        notes.extend(serverless::root_ca_revocation_notes(env, &root_revoked));
    }

    let (revocations, n) = serverless::dedupe_revocations(revocations);
    notes.extend(n);
    notes.extend(serverless::repository_notes(
        &envs_with_requests,
        &revocations,
    ));
    if !revocations.is_empty() {
        outputs.push(("revocations.yaml".into(), revocations_yaml(&revocations)));
    }

    counts.revocations = revocations.len();
    counts.notes = notes.len();
    for n in &notes {
        match n.kind() {
            NoteKind::Problem => counts.problems += 1,
            NoteKind::Difference => counts.differences += 1,
            NoteKind::Info => counts.info += 1,
        }
    }
    let mut files: Vec<String> = outputs.iter().map(|(p, _)| p.clone()).collect();
    files.push("IMPORT-REPORT.md".into());
    // A skipped environment is named in its note only.
    envs.retain(|e| serverless::valid_env_name(e));
    let report = ImportReport {
        source: source.display().to_string(),
        dest: dest.display().to_string(),
        envs,
        requests,
        revocations,
        files,
        notes,
        counts,
    };
    outputs.push(("IMPORT-REPORT.md".into(), report.markdown().into_bytes()));

    // Refuse before writing anything, so a refused import leaves the destination untouched.
    let mut seen = BTreeSet::new();
    let mut existing = Vec::new();
    for (p, _) in &outputs {
        if !seen.insert(p.as_str()) {
            return Err(format!("internal error: {p} would be written twice"));
        }
        if fs::symlink_metadata(dest.join(p)).is_ok() {
            existing.push(p.as_str());
        }
        check_folders(dest, p)?;
    }
    if !existing.is_empty() {
        return Err(format!(
            "{}: refusing to overwrite {}",
            dest.display(),
            existing.join(", ")
        ));
    }
    let mut written: Vec<&String> = Vec::new();
    for (p, bytes) in &outputs {
        if let Err(e) = write_new(&dest.join(p), bytes) {
            // Only files this run created: a retried import then finds nothing of its own.
            let left: Vec<&str> = (written.iter())
                .filter(|w| fs::remove_file(dest.join(w)).is_err())
                .map(|w| w.as_str())
                .collect();
            return Err(match (written.len(), left.is_empty()) {
                (0, _) => format!("{e}; nothing was written"),
                (_, true) => format!("{e}; the files written before it were removed"),
                (_, false) => format!(
                    "{e}; these files written before it could not be removed, remove them before \
                     a retry: {}",
                    left.join(", ")
                ),
            });
        }
        written.push(p);
    }
    Ok(report)
}

/// Every folder above `rel` inside `dest` that exists must be a real folder: a link would take
/// the writes outside `dest`, and a file would stop them half-way.
fn check_folders(dest: &Path, rel: &str) -> Result<(), String> {
    let mut at = dest.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Err(_) => return Ok(()),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{}: a symbolic link where import writes a folder; refusing to write through it",
                    at.display()
                ));
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "{}: a file where import writes a folder; nothing was written",
                    at.display()
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Checks the CSR with gitca's own rules, records its key type, and notes a subject
/// emailAddress the serverless CA would have copied from it.
fn csr_notes(
    env: &str,
    entry: &serverless::ConvertedEntry,
    bytes: &[u8],
    key_types: &mut Vec<String>,
    notes: &mut Vec<ImportNote>,
) {
    match check_csr(bytes) {
        Ok(csr) => {
            key_types.push(csr.key.policy_name().to_string());
            let tls_email = entry
                .notes
                .iter()
                .any(|n| n.code == code::SUBJECT_EMAIL_DROPPED);
            if !tls_email && csr.has_subject_email() {
                notes.push(ImportNote::new(
                    code::SUBJECT_EMAIL_DROPPED,
                    env,
                    &entry.common_name,
                    "the CSR's subject emailAddress (which the serverless CA copies) is left out: gitca certificates carry no emailAddress attribute",
                ));
            }
        }
        Err((c, m)) => notes.push(ImportNote::new(
            code::CSR_REJECTED_BY_GITCA,
            env,
            &entry.common_name,
            format!("[{c}] {m}; imported, but gitca rejects the request until the CSR is replaced"),
        )),
    }
}

fn request_yaml(
    env: &str,
    entry: &serverless::ConvertedEntry,
    req: &ImportedRequest,
) -> Result<Vec<u8>, String> {
    let yaml = serde_yaml_ng::to_string(&req.file).map_err(|e| e.to_string())?;
    // Debug formatting keeps the common name on one comment line whatever it contains.
    Ok(format!(
        "# Imported by `gitca import` from certs/{env}/tls.json entry {} (common_name {:?}); see IMPORT-REPORT.md.\n{yaml}",
        entry.index, entry.common_name
    )
    .into_bytes())
}

/// The serverless CA's revocations, as a record in comments: gitca revokes only serials it
/// issued, so as entries every plan would reject them (revocation-unknown-serial) and every
/// pull request's check would fail.
fn revocations_yaml(revs: &[ImportedRevocation]) -> Vec<u8> {
    let mut s = String::from(
        "# Imported by `gitca import` from the serverless CA's revoked.json files; see IMPORT-REPORT.md.\n\
         # The serials below were issued and revoked by the serverless CA. gitca revokes only serials\n\
         # it issued, so they are a record here, not entries: keep the serverless CA's CRL published\n\
         # until these certificates expire. Append gitca's own revocations below.\n",
    );
    for r in revs {
        // Debug-quoted: a name or serial from the source cannot end the comment line.
        s.push_str(&format!(
            "#   {} {:?}: serial {:?}, reason {} (certs/{}/revoked.json)\n",
            r.env, r.common_name, r.serial, r.reason, r.env
        ));
    }
    s.push_str("revocations: []\n");
    s.into_bytes()
}

/// Reads `certs/<env>/<name>` as a JSON list; absent is empty, unparsable is a note.
fn read_list(
    root: &Path,
    env: &str,
    name: &str,
    notes: &mut Vec<ImportNote>,
) -> Result<Vec<Value>, String> {
    let rel = format!("certs/{env}/{name}");
    if fs::symlink_metadata(root.join(&rel)).is_err() {
        return Ok(vec![]);
    }
    let parsed = read_source_file(root, &rel).and_then(|b| {
        let text = String::from_utf8(b).map_err(|_| format!("{rel} is not UTF-8"))?;
        serverless::parse_list(&rel, &text)
    });
    Ok(parsed.unwrap_or_else(|m| {
        notes.push(ImportNote::new(
            code::TLS_JSON_INVALID,
            env,
            "",
            format!("{m}; skipped"),
        ));
        vec![]
    }))
}

/// Reads a regular file of the source repository; symlinks and paths leaving it are refused.
fn read_source_file(root: &Path, rel: &str) -> Result<Vec<u8>, String> {
    let path = root.join(rel);
    let meta = fs::symlink_metadata(&path).map_err(|_| format!("{rel} does not exist"))?;
    if !meta.is_file() {
        return Err(format!("{rel} is not a regular file"));
    }
    let real = fs::canonicalize(&path).map_err(|e| format!("{rel}: {e}"))?;
    if !real.starts_with(root) {
        return Err(format!("{rel} leads out of the source repository"));
    }
    if meta.len() > MAX_SOURCE_FILE_BYTES {
        return Err(format!(
            "{rel} is larger than {MAX_SOURCE_FILE_BYTES} bytes"
        ));
    }
    fs::read(&real).map_err(|e| format!("{rel}: {e}"))
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

fn write_new(path: &PathBuf, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    // create_new: a file that appeared since the check is still never overwritten.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| {
        // Created by this call: a part written (a full disk) would block every retry.
        let _ = fs::remove_file(path);
        format!("{}: {e}", path.display())
    })
}

impl ImportReport {
    /// The report as Markdown (written to `IMPORT-REPORT.md`; also fine for a terminal).
    pub fn markdown(&self) -> String {
        let c = &self.counts;
        let mut s = String::new();
        s.push_str("# Import from the serverless CA\n\n");
        s.push_str(&format!(
            "Source: `{}`. Environments: {}.\n\n",
            self.source,
            if self.envs.is_empty() {
                "none".to_string()
            } else {
                md_cell(&self.envs.join(", "))
            }
        ));
        s.push_str(&format!(
            "{} tls.json entries: {} imported, {} not imported. {} revocation(s). \
             {} note(s): {} problem(s) in the source, {} difference(s) in gitca, {} for information.\n\n",
            c.entries,
            c.requests,
            c.not_imported,
            c.revocations,
            c.notes,
            c.problems,
            c.differences,
            c.info
        ));
        s.push_str(
            "Each request describes the certificate the serverless CA would have issued (its silent \
             fixes applied), except that a lifetime above the maximum is kept unless clamping was \
             asked for. Review every note before merging: a **problem** is something the serverless \
             CA silently fixed or refused, a **difference** is where gitca issues differently or \
             rejects, **info** is carried differently without changing the certificate.\n\n",
        );
        if !self.requests.is_empty() {
            s.push_str("## Requests\n\n| env | common name | request | CSR from |\n| --- | --- | --- | --- |\n");
            for r in &self.requests {
                s.push_str(&format!(
                    "| {} | {} | `{}` | `{}` |\n",
                    md_cell(&r.env),
                    md_cell(&r.common_name),
                    md_cell(&r.id),
                    md_cell(&r.csr_source)
                ));
            }
            s.push('\n');
        }
        if !self.revocations.is_empty() {
            s.push_str("## Revocations\n\n| env | common name | serial (decimal) | reason |\n| --- | --- | --- | --- |\n");
            for r in &self.revocations {
                s.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    md_cell(&r.env),
                    md_cell(&r.common_name),
                    r.serial,
                    r.reason
                ));
            }
            s.push('\n');
        }
        for (title, kind) in [
            ("Problems in the source", NoteKind::Problem),
            ("Differences in gitca", NoteKind::Difference),
            ("For information", NoteKind::Info),
        ] {
            let notes: Vec<&ImportNote> = self.notes.iter().filter(|n| n.kind() == kind).collect();
            if notes.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "## {title}\n\n| code | env | common name | what |\n| --- | --- | --- | --- |\n"
            ));
            for n in notes {
                s.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    n.code,
                    md_cell(&n.env),
                    md_cell(&n.common_name),
                    md_cell(&n.message)
                ));
            }
            s.push('\n');
        }
        let used: BTreeSet<&str> = self.notes.iter().map(|n| n.code).collect();
        if !used.is_empty() {
            s.push_str("## Codes\n\n");
            for (code, _, what) in NOTE_CODES.iter().filter(|(c, _, _)| used.contains(c)) {
                s.push_str(&format!("- `{code}`: {what}\n"));
            }
            s.push('\n');
        }
        s.push_str("## Files written\n\n");
        for f in &self.files {
            s.push_str(&format!("- `{f}`\n"));
        }
        s
    }
}

/// Keeps a value inside one Markdown table cell.
fn md_cell(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn fixture_csr() -> String {
        fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/serverless-ca/basic/certs/dev/csrs/api-dev.csr"),
        )
        .unwrap()
    }

    fn one_env_source(root: &Path) -> PathBuf {
        let src = root.join("src");
        write(
            &src,
            "certs/dev/tls.json",
            r#"[{"common_name": "api.dev.example.com", "csr_file": "api.csr", "purposes": ["server_auth"]}]"#,
        );
        write(&src, "certs/dev/csrs/api.csr", &fixture_csr());
        src
    }

    /// Found by review: a link in the destination (a checkout someone else controls) took the
    /// writes outside it, and a file where a folder goes stopped the import half-way, after
    /// which every retry was refused as an overwrite.
    #[cfg(unix)]
    #[test]
    fn a_destination_folder_that_is_a_link_or_a_file_is_refused_before_writing() {
        let t = tempfile::tempdir().unwrap();
        let src = one_env_source(t.path());
        let (dest, outside) = (t.path().join("dest"), t.path().join("outside"));
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("requests")).unwrap();
        let e = import(&src, &dest, ImportOptions::default()).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "written through the link"
        );

        let dest = t.path().join("dest2");
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("policies"), "").unwrap();
        let e = import(&src, &dest, ImportOptions::default()).unwrap_err();
        assert!(e.contains("a file where import writes a folder"), "{e}");
        let left: Vec<_> = walkdir::WalkDir::new(&dest)
            .into_iter()
            .map(|e| e.unwrap().path().to_path_buf())
            .filter(|p| p.is_file())
            .collect();
        assert_eq!(left, vec![dest.join("policies")], "half an import written");
        fs::remove_file(dest.join("policies")).unwrap();
        import(&src, &dest, ImportOptions::default()).unwrap();
    }

    /// Found by review: an environment skipped for its name still had its revocations
    /// converted, its name written raw into a YAML comment of revocations.yaml (a newline in
    /// it wrote entries of its own); and a linked environment vanished without a note.
    #[cfg(unix)]
    #[test]
    fn a_skipped_environment_is_skipped_whole_and_a_linked_one_is_noted() {
        let t = tempfile::tempdir().unwrap();
        let src = one_env_source(t.path());
        let evil = "x\n  - serial: \"99\"\n    reason: key_compromise\n  #";
        write(
            &src,
            &format!("certs/{evil}/revoked.json"),
            r#"[{"serial_number": "4242", "common_name": "a"}]"#,
        );
        write(&src, "elsewhere/prd/tls.json", "[]");
        std::os::unix::fs::symlink(src.join("elsewhere/prd"), src.join("certs/prd")).unwrap();
        let dest = t.path().join("dest");
        let r = import(&src, &dest, ImportOptions::default()).unwrap();
        assert!(r.revocations.is_empty(), "{:?}", r.revocations);
        assert!(!dest.join("revocations.yaml").exists());
        assert!(!r.envs.iter().any(|e| e.contains('\n')), "{:?}", r.envs);
        // Nor does its name break IMPORT-REPORT.md's table of notes: one line per note.
        let report = r.markdown();
        assert!(
            !report
                .lines()
                .any(|l| l.trim_start().starts_with("- serial")),
            "{report}"
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.code == code::ENV_INVALID && n.message.contains("symbolic link")),
            "{:?}",
            r.notes
        );
        let e = import(
            &src,
            &t.path().join("dest-prd"),
            ImportOptions {
                only_env: Some("prd".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn file_level_notes_and_refusals() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        write(
            &src,
            "certs/dev/tls.json",
            r#"[
              {"common_name": "api.dev.example.com", "csr_file": "api.csr", "purposes": ["server_auth"]},
              {"common_name": "gone.dev.example.com", "csr_file": "gone.csr", "purposes": ["server_auth"]},
              {"common_name": "bad.dev.example.com", "csr_file": "bad.csr", "purposes": ["server_auth"]}
            ]"#,
        );
        write(&src, "certs/dev/csrs/api.csr", &fixture_csr());
        write(&src, "certs/dev/csrs/bad.csr", "not a CSR");
        write(&src, "certs/dev/csrs/spare.csr", &fixture_csr());
        write(&src, "certs/dev/revoked.json", "{}");
        write(
            &src,
            "certs/prd/tls.json",
            r#"[{"common_name": "x.example.com", "csr_file": "x.csr"}]"#,
        );
        write(&src, "certs/prd/csrs/x.csr", &fixture_csr());
        let dest = t.path().join("dest");
        let r = import(&src, &dest, ImportOptions::default()).unwrap();
        let codes: BTreeSet<&str> = r.notes.iter().map(|n| n.code).collect();
        for c in [
            code::CSR_MISSING,
            code::CSR_REJECTED_BY_GITCA,
            code::CSR_UNREFERENCED,
            code::TLS_JSON_INVALID,
            code::ENVS_MERGED,
        ] {
            assert!(codes.contains(c), "{c} missing from {codes:?}");
        }
        assert_eq!(r.counts.requests, 3);
        assert_eq!(r.counts.not_imported, 1);
        assert!(dest.join("requests/dev/bad.dev.example.com.yaml").is_file());
        assert!(dest.join("IMPORT-REPORT.md").is_file());

        // A second import into the same place is refused and writes nothing.
        let before = fs::read(dest.join("IMPORT-REPORT.md")).unwrap();
        let e = import(&src, &dest, ImportOptions::default()).unwrap_err();
        assert!(e.contains("refusing to overwrite"), "{e}");
        assert_eq!(fs::read(dest.join("IMPORT-REPORT.md")).unwrap(), before);

        // One environment at a time keeps CAs apart.
        let one = import(
            &src,
            &t.path().join("dest-prd"),
            ImportOptions {
                only_env: Some("prd".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(one.envs, vec!["prd"]);
        assert!(!one.notes.iter().any(|n| n.code == code::ENVS_MERGED));
        assert!(
            import(
                &src,
                &t.path().join("x"),
                ImportOptions {
                    only_env: Some("qa".into()),
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(
            import(
                &t.path().join("nowhere"),
                &t.path().join("y"),
                ImportOptions::default()
            )
            .is_err()
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_csrs_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        write(
            &src,
            "certs/dev/tls.json",
            r#"[{"common_name": "a.example.com", "csr_file": "a.csr"}]"#,
        );
        write(t.path(), "outside.csr", &fixture_csr());
        fs::create_dir_all(src.join("certs/dev/csrs")).unwrap();
        std::os::unix::fs::symlink(
            t.path().join("outside.csr"),
            src.join("certs/dev/csrs/a.csr"),
        )
        .unwrap();
        let r = import(&src, &t.path().join("dest"), ImportOptions::default()).unwrap();
        assert!(r.notes.iter().any(|n| n.code == code::CSR_MISSING));
        assert_eq!(r.counts.requests, 0);
    }
}
