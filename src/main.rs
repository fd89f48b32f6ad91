//! The gitca CLI: parse arguments, call the app layer, map outcomes to exit codes.

use clap::{Args, Parser, Subcommand};
use gitca::adapters::signer::KeyAlgorithm;
use gitca::app::apply::{self, ApplyOptions, FailPoint};
use gitca::app::context::{Context, RepoArgs};
use gitca::app::init::{self, InitOptions};
use gitca::app::render::{self, Format};
use gitca::app::status::{self, StatusFormat};
use gitca::app::{Exit, RunError};
use gitca::domain::duration::Span;
use gitca::domain::plan::{self, Inputs};
use std::path::PathBuf;
use std::process::ExitCode;
use time::OffsetDateTime;

// mimalloc with its own defaults: memory freed a second ago goes back to the OS (its
// `purge_delay`). Keeping it for the run instead changed a 10,000 issuance by less than 1% on
// this host, and held about 35-55 MiB more at the peak of a first issuance of 100,000
// (BENCHMARKS.md, section 3).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "gitca",
    version,
    about = "A GitOps certificate authority: reconcile a CA repository of certificate requests"
)]
#[command(
    after_help = "Exit codes of plan and apply: 0 nothing to do / done, 2 changes pending (plan), \
3 some requests rejected (the rest planned/applied), 1 error."
)]
struct Cli {
    #[command(flatten)]
    repo: RepoOpts,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct RepoOpts {
    /// The Git repository (default: the current directory).
    #[arg(long, global = true, default_value = ".")]
    repo: PathBuf,
    /// The CA repository's folder inside the Git repository.
    #[arg(long, global = true)]
    dir: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new CA (root + issuing, or --single) with keys outside the repository.
    Init {
        /// CA name (when gitca.yaml does not exist yet).
        #[arg(long, default_value = "gitca")]
        name: String,
        /// One self-signed CA instead of a root and an issuing CA.
        #[arg(long)]
        single: bool,
        #[arg(long, value_enum, default_value = "p256")]
        key_algorithm: KeyAlgorithm,
        #[arg(long, default_value = "3650d")]
        root_lifetime: Span,
        #[arg(long, default_value = "1825d")]
        issuing_lifetime: Span,
        /// pathLenConstraint of the root CA (default: none; the issuing CA gets 0).
        #[arg(long)]
        path_len: Option<u8>,
        /// Organization in the CA subjects.
        #[arg(long)]
        organization: Option<String>,
        /// With a KMS issuing key and no root key: write the issuing CA's CSR to this file.
        #[arg(long)]
        csr_out: Option<PathBuf>,
    },
    /// Show what apply would do. Reads the committed tree (HEAD or --rev); signs nothing.
    Plan {
        /// The commit to plan (default HEAD).
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        rev: String,
        /// Read uncommitted files instead, to check a request before committing it.
        #[arg(long)]
        worktree: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Plan as of this time (RFC 3339), e.g. to see what renews next week.
        #[arg(long)]
        at: Option<String>,
        /// Do not read the state (no AWS access needed): checks CSRs and policies; every
        /// request shows as if nothing were issued yet.
        #[arg(long)]
        no_state: bool,
    },
    /// Plan, sign, record, write the outputs and commit them (HEAD only).
    Apply {
        /// Push the commit to the upstream; on a race, re-plan on the new head and retry.
        #[arg(long)]
        push: bool,
        /// Accept a HEAD that does not descend from the last reconciled commit.
        #[arg(long)]
        allow_history_rewrite: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// How long to wait for another apply of the same CA.
        #[arg(long, default_value = "120s")]
        lease_wait: Span,
        /// Append this run's events (issued, renewed, rejected, revoked, expiring) as JSON Lines.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Read and check every request, not only what changed since the last reconcile.
        #[arg(long)]
        full_scan: bool,
        /// Testing only: reconcile as if it were this time (RFC 3339).
        #[arg(long, hide = true)]
        now: Option<String>,
        /// Testing only: stop as if the process died after this step.
        #[arg(long, hide = true, value_enum)]
        fail_at: Option<FailPoint>,
        /// Testing only: hang after this step (to be killed).
        #[arg(long, hide = true, value_enum)]
        hang_at: Option<FailPoint>,
        /// Testing only: certificates issued per round of intents, signatures and records.
        #[arg(long, hide = true, default_value_t = gitca::app::apply::ISSUE_CHUNK)]
        issue_chunk: usize,
        /// Testing only: at most this many new certificates encoded as PEM beside the state
        /// writes.
        #[arg(long, hide = true, default_value_t = gitca::app::outputs::PEM_BESIDE)]
        pem_beside: usize,
        /// Testing only: lease time-to-live.
        #[arg(long, hide = true, default_value = "600s")]
        lease_ttl: Span,
    },
    /// The inventory of issued certificates (table, JSON or CSV).
    Status {
        #[arg(long, value_enum, default_value = "table")]
        format: StatusFormat,
        /// Exit 2 when a current certificate expires within this window (for cron alerts);
        /// without it, "expiring" means inside the renewal window (issuance.renew_before).
        #[arg(long)]
        expiring_within: Option<Span>,
        /// Show only the current certificate of each request.
        #[arg(long)]
        current: bool,
    },
    /// Audit the repository against the CA key and the state; needs no signing rights.
    /// Exits 2 on any finding.
    Verify {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Testing only: audit as if it were this time (RFC 3339), as `apply --now` signs.
        #[arg(long, hide = true)]
        now: Option<String>,
    },
    /// Convert a repository of the serverless CA on AWS (certs/<env>/tls.json) into gitca's
    /// format, with a report of everything whose meaning changes. Writes only new files.
    Import {
        /// The serverless CA repository (its work tree).
        source: PathBuf,
        /// Where to write gitca's requests, policies and revocations (existing files are refused).
        dest: PathBuf,
        /// The serverless CA's max_cert_lifetime in days.
        #[arg(long, default_value_t = 365)]
        max_lifetime_days: u64,
        /// Write lifetimes clamped to the maximum, as the serverless CA issued them.
        #[arg(long)]
        clamp_lifetime: bool,
        /// Import only this environment.
        #[arg(long)]
        env: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Re-sign the CRL when nextUpdate is within the overlap window or revocations changed.
    Crl {
        /// Re-sign even if the CRL is current.
        #[arg(long)]
        force: bool,
        /// Push the CRL commit to the upstream (as apply --push: only a HEAD the remote holds).
        #[arg(long)]
        push: bool,
        #[arg(long, hide = true)]
        now: Option<String>,
    },
}

fn parse_time(s: &Option<String>) -> Result<Option<OffsetDateTime>, RunError> {
    s.as_ref()
        .map(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| RunError::NeedsHuman(format!("invalid time {t:?}: {e}")))
        })
        .transpose()
}

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

async fn run(cli: Cli) -> Result<Exit, RunError> {
    let args = RepoArgs {
        repo: cli.repo.repo,
        dir: cli.repo.dir,
    };
    match cli.command {
        Command::Init {
            name,
            single,
            key_algorithm,
            root_lifetime,
            issuing_lifetime,
            path_len,
            organization,
            csr_out,
        } => {
            let o = init::init(
                &args,
                &InitOptions {
                    name,
                    single,
                    algorithm: key_algorithm,
                    root_lifetime,
                    issuing_lifetime,
                    path_len,
                    organization,
                    csr_out,
                },
            )
            .await?;
            if let Some(csr) = o.csr {
                println!(
                    "Wrote the issuing CA's CSR to {}; have your root CA sign it, then commit the certificates",
                    csr.display()
                );
                return Ok(Exit::Clean);
            }
            println!(
                "Created CA certificates {} in commit {}",
                o.certificates.join(", "),
                o.commit
            );
            for k in o.keys {
                println!(
                    "Private key (keep it safe, never commit it): {}",
                    k.display()
                );
            }
            Ok(Exit::Clean)
        }
        Command::Plan {
            rev,
            worktree,
            format,
            at,
            no_state,
        } => {
            let ctx = Context::load_with(
                &args,
                if worktree { None } else { Some(rev.as_str()) },
                !no_state,
            )
            .await?;
            let (index, _) = ctx.index().await?;
            let now = parse_time(&at)?.unwrap_or_else(OffsetDateTime::now_utc);
            let facts = ctx.ca_facts();
            let mut p = plan::plan(&Inputs {
                snapshot: &ctx.snapshot,
                config: &ctx.config,
                policies: &ctx.policies,
                index: &index,
                ca: &facts,
                now,
                no_state,
            })
            .map_err(|e| RunError::NeedsHuman(e.0))?;
            write_stdout("the plan", |out| render::write_plan(&mut p, format, out))?;
            Ok(match p.exit_code() {
                0 => Exit::Clean,
                2 => Exit::Changes,
                _ => Exit::Rejections,
            })
        }
        Command::Apply {
            push,
            allow_history_rewrite,
            format,
            lease_wait,
            now,
            fail_at,
            hang_at,
            lease_ttl,
            events,
            full_scan,
            issue_chunk,
            pem_beside,
        } => {
            let opts = ApplyOptions {
                push,
                full_scan,
                allow_history_rewrite,
                now: parse_time(&now)?,
                fail_at,
                hang_at,
                events_file: events,
                lease_ttl: lease_ttl.0,
                lease_wait: lease_wait.0,
                issue_chunk,
                pem_beside,
                ..Default::default()
            };
            let mut o = apply::apply(&args, &opts).await?;
            write_stdout("the outcome", |out| {
                render::write_applied(&mut o, format, out)
            })?;
            let exit = o.exit();
            // The process exits next and takes the memory back at once; freeing it here would
            // take tens of milliseconds at 100,000 certificates.
            std::mem::forget(o);
            Ok(exit)
        }
        Command::Status {
            format,
            expiring_within,
            current,
        } => {
            let ctx = Context::load(&args, Some("HEAD")).await?;
            let (index, _) = ctx.index().await?;
            // Without a window, "expiring" is due for renewal: a fixed 30 days called every new
            // 30-day certificate expiring.
            let window = expiring_within
                .unwrap_or(ctx.config.issuance.renew_before)
                .as_time();
            let mut rows =
                status::inventory(&ctx, &index, OffsetDateTime::now_utc(), window).await?;
            if current {
                rows.retain(|r| r.current);
            }
            print!("{}", status::render(&rows, format));
            let alert = expiring_within.is_some()
                && rows.iter().any(|r| {
                    r.current
                        && matches!(
                            r.state,
                            status::CertState::Expiring | status::CertState::Expired
                        )
                });
            Ok(if alert { Exit::Changes } else { Exit::Clean })
        }
        Command::Verify { format, now } => {
            let now = parse_time(&now)?.unwrap_or_else(OffsetDateTime::now_utc);
            let ctx = Context::load(&args, Some("HEAD")).await?;
            let (index, _) = ctx.index().await?;
            let findings = gitca::app::verify::audit(&ctx, &index, now).await?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&findings).unwrap_or_default()
                ),
                _ => {
                    for f in &findings {
                        println!("{}: [{}] {}", f.file, f.code, f.message);
                    }
                    println!("{} finding(s)", findings.len());
                }
            }
            Ok(if findings.is_empty() {
                Exit::Clean
            } else {
                Exit::Changes
            })
        }
        Command::Import {
            source,
            dest,
            max_lifetime_days,
            clamp_lifetime,
            env,
            format,
        } => {
            let opts = gitca::domain::serverless::ImportOptions {
                max_lifetime_days,
                clamp_lifetime,
                only_env: env,
            };
            let report = gitca::app::import::import(&source, &dest, opts)?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
                _ => print!("{}", report.markdown()),
            }
            Ok(Exit::Clean)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "gitca",
                &mut std::io::stdout(),
            );
            Ok(Exit::Clean)
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(|e| RunError::NeedsHuman(e.to_string()))?;
            Ok(Exit::Clean)
        }
        Command::Crl { force, push, now } => {
            let opts = ApplyOptions {
                push,
                crl_only: true,
                force_crl: force,
                now: parse_time(&now)?,
                ..Default::default()
            };
            let o = apply::apply(&args, &opts).await?;
            match o.crl_number {
                Some(n) => println!(
                    "CRL number {n} signed{}",
                    o.commit
                        .map(|c| format!(", committed {c}"))
                        .unwrap_or_default()
                ),
                None => println!("The CRL is current; nothing to do"),
            }
            if let Some(e) = o.plan_error {
                return Err(RunError::NeedsHuman(format!(
                    "{e}\n(the CRL is up to date from the state alone; fix the commit so that apply runs)"
                )));
            }
            Ok(Exit::Clean)
        }
    }
}

fn main() -> ExitCode {
    // From the start, so a lock taken at any point goes with an interrupted run.
    gitca::adapters::remove_locks_on_termination();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap exits 2 on a usage error, the code plan, status and verify give for changes
            // pending, an alert, findings: a mistyped flag must not read as one.
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    init_logging(cli.verbose, cli.log_format);
    if let Err(e) = start_workers() {
        eprintln!("gitca: error: {e}");
        return ExitCode::from(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gitca: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(exit) => exit.code() as u8,
        Err(e) => {
            eprintln!("gitca: error: {e}");
            1
        }
    };
    // Connection pools in a freed context close while the runtime they belong to still runs.
    gitca::background::finish();
    drop(rt);
    exit_now(code)
}

/// Starts the pool that checks CSRs and signs: GITCA_THREADS workers, else rayon's own count
/// (RAYON_NUM_THREADS, else every CPU the process may use). With one worker per such CPU, each
/// worker stays on its own CPU: left to the scheduler, workers woken together were put on one
/// CPU and left there for 10-20 ms at a time with the other idle (a two-thread 10,000
/// issuance: 0.27 s of CPU time idle per run, 0.20 s with them kept apart). The other threads
/// and the git commands go where the scheduler puts them. A thread or process started from a
/// worker would inherit its one CPU; gitca starts none there.
fn start_workers() -> Result<(), String> {
    let mut pool = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("gitca-worker-{i}"));
    if let Some(n) = workers_asked_for()? {
        pool = pool.num_threads(n);
    }
    // Nothing has used rayon yet, so the pool can only fail to start its threads: the run
    // stops rather than go on with rayon's default pool, started later without a word.
    if let Err(e) = pool.build_global() {
        return Err(format!(
            "cannot start the workers (GITCA_THREADS, RAYON_NUM_THREADS): {e}"
        ));
    }
    let cpus = allowed_cpus();
    if cpus.len() == rayon::current_num_threads() {
        rayon::broadcast(|worker| keep_on_cpu(cpus[worker.index()]));
    }
    Ok(())
}

/// GITCA_THREADS, where set to a count. Empty (a CI variable left blank) and 0 (rayon's
/// convention for RAYON_NUM_THREADS) leave the default, a worker per CPU. Anything else that is
/// not a count is refused rather than replaced by the default: a runner limited to one worker
/// would otherwise use every CPU, unseen. So is a count over [`MAX_WORKERS`], a typo rather
/// than a machine.
fn workers_asked_for() -> Result<Option<usize>, String> {
    let value = std::env::var_os("GITCA_THREADS").unwrap_or_default();
    if value.is_empty() {
        return Ok(None);
    }
    match value.to_str().map(str::parse::<usize>) {
        Some(Ok(0)) => Ok(None),
        Some(Ok(n)) if n > MAX_WORKERS => Err(format!(
            "GITCA_THREADS={value:?}: more workers than gitca starts (at most {MAX_WORKERS})"
        )),
        Some(Ok(n)) => Ok(Some(n)),
        _ => Err(format!(
            "GITCA_THREADS={value:?}: not a number of workers (a whole number; 0 or unset for \
             one per CPU)"
        )),
    }
}

/// The most workers GITCA_THREADS may ask for: far more than the CPUs of any machine gitca
/// runs on, far fewer than the threads a process may start.
const MAX_WORKERS: usize = 1024;

/// The CPUs this process may run on, in order; none where that cannot be told.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    use rustix::thread::{CpuSet, sched_getaffinity};
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Keeps the calling thread on `cpu`; a refusal leaves it where it may run.
#[cfg(target_os = "linux")]
fn keep_on_cpu(cpu: usize) {
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &one);
}

#[cfg(not(target_os = "linux"))]
fn keep_on_cpu(_cpu: usize) {}

/// Ends the process without running the exit handlers of the C libraries: they only give back
/// memory the kernel takes back anyway (mimalloc returned every page it held, page by page,
/// 5-10 ms of a 10,000 issuance with the other core idle), and mimalloc's statistics, if asked
/// for by its environment, are not printed. Every file and lock of the run is closed or
/// committed by now, and the threads `background` started are joined; rayon's idle workers, and
/// a PEM encoder a failed run left (see `outputs::FreshPems`), end with the process. Standard
/// output is flushed as Rust's own exit would (its writes report their errors:
/// `write_stdout`); standard error is not buffered. A panic unwinds out of `main` and exits
/// the usual way.
fn exit_now(code: u8) -> ! {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: _exit(2) only ends the process.
    unsafe { libc::_exit(code.into()) }
}

/// Writes `what` to standard output in 64 KiB writes: it is line-buffered, and a plan or
/// outcome of 10,000 requests in JSON is 110,000 lines, a system call each.
fn write_stdout(
    what: &str,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), String> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    write(&mut out)
        .and_then(|()| std::io::Write::flush(&mut out))
        .map_err(|e| format!("cannot write {what}: {e}"))
}
