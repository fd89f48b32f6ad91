//! gitca at scale: issuance throughput against the crypto floor (`openssl speed`) and an
//! `openssl x509 -req` loop, no-op and small-change reconciles of 1k..100k-request
//! repositories with their peak memory, the KMS path against moto, and a 100k-entry CRL.
//! Prints Markdown tables (BENCHMARKS.md holds a run). It generates its own data (cached under
//! the target directory) and drives the real release binary, as a user would.
//!
//! ```text
//! cargo bench --bench scale -- issuance [--n 10000] [--ca p256] [--threads 1]
//! cargo bench --bench scale -- noop [--sizes 1000,10000,100000]
//! cargo bench --bench scale -- kms [--python .venv/bin/python] [--n 1000] [--rate 50]
//! cargo bench --bench scale -- crl [--n 100000]
//! cargo bench --bench scale -- state [--n 100000]
//! cargo bench --bench scale -- speed
//! ```

use gitca::adapters::signer::{KeyAlgorithm, LocalSigner, Signer, sign_verified};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const GITCA: &str = env!("CARGO_BIN_EXE_gitca");

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let what = args.first().map(String::as_str).unwrap_or("help");
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n = |default: usize| opt("--n").map_or(default, |v| v.parse().expect("--n N"));
    if let Some(d) = opt("--work-dir") {
        std::fs::create_dir_all(&d).unwrap();
        WORK_DIR.set(PathBuf::from(d)).unwrap();
    }
    println!("{}", machine());
    println!("Repositories and states in {}", describe_dir(&work_dir()));
    if what != "help" {
        println!(
            "Held in memory for the whole bench: {}",
            hold_programs_in_memory()
        );
    }
    match what {
        "issuance" => {
            let ca = opt("--ca");
            assert!(
                ca.as_deref()
                    .is_none_or(|c| CA_KEYS.iter().any(|(key, _)| *key == c)),
                "--ca p256|p384|rsa2048"
            );
            let threads = opt("--threads").map(|t| t.parse().expect("--threads N"));
            // gitca takes GITCA_THREADS=0 as unset: a worker per CPU.
            assert!(threads != Some(0), "--threads N, at least 1");
            let runs = opt("--runs").map(|r| r.parse().expect("--runs N"));
            assert!(runs != Some(0), "--runs N, at least 1");
            issuance(n(10_000), ca.as_deref(), threads, runs)
        }
        "noop" => {
            let sizes: Vec<usize> = opt("--sizes")
                .unwrap_or_else(|| "1000,10000,100000".into())
                .split(',')
                .map(|s| s.parse().expect("--sizes N,N"))
                .collect();
            noop(&sizes);
        }
        "kms" => kms(
            &opt("--python").unwrap_or_else(|| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_string()
            }),
            n(1000),
            opt("--rate").map(|r| r.parse().expect("--rate N")),
        ),
        "crl" => crl(n(100_000)),
        "state" => state(n(100_000)),
        "speed" => speed(),
        _ => eprintln!(
            "usage: cargo bench --bench scale -- issuance|noop|kms|crl|state|speed [--n N] [--ca p256|p384|rsa2048] [--threads N] [--runs N] [--sizes ..] [--python P] [--work-dir DIR]"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Running things
// ---------------------------------------------------------------------------------------------

/// What a process cost: wall time, CPU time (its own and that of the children it waited for,
/// such as git), peak resident memory, the pages it had to read from disk, and the time the
/// host took the machine's CPUs away meanwhile.
struct Run {
    secs: f64,
    cpu_secs: f64,
    max_rss_mib: f64,
    major_faults: i64,
    steal_secs: f64,
    stdout: String,
}

/// Time the host has run something else on this virtual machine's CPUs, summed over all of
/// them (a one-CPU run's figure includes the CPU it was not on), from /proc/stat's steal
/// column; 0 where there is none.
fn steal_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: f64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / per_second.max(1) as f64
}

/// Runs to completion, measuring the child and the children it waited for (wait4's rusage).
// The child is reaped by wait4 below, which std's lint cannot see.
#[allow(clippy::zombie_processes)]
fn run(mut cmd: Command) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let steal_before = steal_secs();
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, not yet reaped; status and usage are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let secs = start.elapsed().as_secs_f64();
    let steal = steal_secs() - steal_before;
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    if code == 1 || code < 0 {
        panic!("{cmd:?} failed ({code}):\n{stdout}\n{stderr}");
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run {
        secs,
        cpu_secs: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        max_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        major_faults: usage.ru_majflt as i64,
        steal_secs: steal,
        stdout,
    }
}

/// Makes `cmd` run on one CPU only, the first this process may use, with every process it
/// starts (git). `std::thread::available_parallelism` then says 1 in gitca.
fn on_one_cpu(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills it.
    let mut mine: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `mine` is a valid cpu_set_t of `size` bytes.
    let first = match unsafe { libc::sched_getaffinity(0, size, &mut mine) } {
        0 => (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &mine) })
            .expect("some CPU"),
        // More CPUs than a cpu_set_t holds: the first is as good as any.
        _ => 0,
    };
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(first, &mut one) };
    // SAFETY: between fork and exec the closure only makes one system call (glibc's wrapper of
    // sched_setaffinity allocates nothing) and reads errno; `one` is copied into it.
    unsafe {
        cmd.pre_exec(move || match libc::sched_setaffinity(0, size, &one) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
}

fn gitca(repo: &Path, data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(GITCA);
    c.args(args)
        .current_dir(repo)
        .env("GITCA_DATA_DIR", data)
        .env_remove("RUST_LOG");
    c
}

/// Keeps gitca's, git's and openssl's programs, and the libraries they load, in memory for the
/// whole bench: each is mapped with its pages read in, and locked (mlock) where the process may;
/// neither is ever undone. This machine pages out file pages that no process maps and no one
/// touched for about a minute (a DAMON scheme), and a run then read them back from a disk that
/// has taken 0.6 s for gitca's 26 MB at times: the run measured the host's disk, not gitca.
/// A mapping alone keeps that scheme away; the lock keeps the kernel's own reclaim away too.
/// Returns what it held, for the report; a file it cannot read or map is left out, with a
/// warning, and the runs' major faults then show what that cost.
fn hold_programs_in_memory() -> String {
    let mut files = vec![GITCA.to_string()];
    for tool in ["git", "openssl"] {
        match output_of("sh", &["-c", &format!("command -v {tool}")]) {
            Some(path) => files.push(path.trim().to_string()),
            None => eprintln!("warning: no {tool} on PATH to hold in memory"),
        }
    }
    for program in files.clone() {
        // `ldd` lines: "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" and
        // "/lib64/ld-linux-x86-64.so.2 (0x…)". A static program has none (ldd fails).
        let listed = output_of("ldd", &[&program]).unwrap_or_default();
        files.extend(listed.lines().filter_map(|l| {
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_string())
        }));
    }
    files.sort();
    files.dedup();
    let (mut locked, mut mapped) = (0, 0);
    for f in &files {
        match hold_in_memory(Path::new(f)) {
            Ok(true) => locked += 1,
            Ok(false) => mapped += 1,
            Err(e) => eprintln!("warning: {f} is not held in memory: {e}"),
        }
    }
    format!(
        "{} files (gitca, git, openssl and their libraries): {locked} locked, {mapped} only mapped \
         (no lock allowed)",
        locked + mapped
    )
}

/// Maps `path` with its pages read in and tries to lock them; true if locked.
fn hold_in_memory(path: &Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    if len == 0 {
        return Ok(true);
    }
    // SAFETY: a new read-only shared mapping of an open file, checked for failure. It is
    // never unmapped and never read through, so the file changing underneath cannot break
    // Rust's rules; it only keeps the pages in memory.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `addr` is the mapping of `len` bytes made above. Without the right to lock
    // (no CAP_IPC_LOCK, a small RLIMIT_MEMLOCK) the mapping stays, populated.
    Ok(unsafe { libc::mlock(addr, len) } == 0)
}

/// What `prog` printed, if it ran and succeeded: for what the bench can do without.
fn output_of(prog: &str, args: &[&str]) -> Option<String> {
    Command::new(prog)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn sh(dir: &Path, prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .expect(prog);
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    format!(
        "Machine: {} cores ({cpu}), {} GiB RAM, {}; gitca {} (release)\n",
        cores(),
        mem / 1024 / 1024,
        sh(Path::new("."), "openssl", &["version"]).trim(),
        env!("CARGO_PKG_VERSION"),
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------------------------------------
// Data: CSRs and CA repositories
// ---------------------------------------------------------------------------------------------

fn cache() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where the repositories and states are made (`--work-dir`; the CSR cache stays in the target
/// folder): the file system's cost of creating files is a large share of an apply, so the same
/// run on tmpfs tells gitca's share apart from the disk's.
static WORK_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn work_dir() -> PathBuf {
    WORK_DIR.get().cloned().unwrap_or_else(cache)
}

/// The folder and its file system type, for the report.
fn describe_dir(d: &Path) -> String {
    let fs = output_of("stat", &["-f", "-c", "%T", &d.to_string_lossy()])
        .map(|o| o.trim().to_string())
        .unwrap_or_default();
    format!("{} ({fs})", d.display())
}

/// `n` CSRs with distinct keys (`p256` or `rsa2048`), `r{i}.bench.example.com`, cached.
fn csrs(kind: &str, n: usize) -> PathBuf {
    let dir = cache().join(format!("csrs-{kind}"));
    std::fs::create_dir_all(&dir).unwrap();
    let missing: Vec<usize> = (0..n)
        .filter(|i| !dir.join(format!("{i}.csr.pem")).exists())
        .collect();
    if missing.is_empty() {
        return dir;
    }
    eprintln!(
        "generating {} {kind} CSRs (cached in {})",
        missing.len(),
        dir.display()
    );
    let alg = match kind {
        "p256" => KeyAlgorithm::P256,
        "rsa2048" => KeyAlgorithm::Rsa2048,
        _ => panic!("CSR key kind {kind}"),
    };
    let chunks: Vec<&[usize]> = missing.chunks(missing.len().div_ceil(cores())).collect();
    std::thread::scope(|s| {
        for chunk in chunks {
            let dir = &dir;
            s.spawn(move || {
                for &i in chunk {
                    let pem = csr_pem(alg, &format!("r{i}.bench.example.com"));
                    let tmp = dir.join(format!("{i}.tmp"));
                    std::fs::write(&tmp, pem).unwrap();
                    std::fs::rename(tmp, dir.join(format!("{i}.csr.pem"))).unwrap();
                }
            });
        }
    });
    dir
}

fn csr_pem(alg: KeyAlgorithm, cn: &str) -> String {
    use der::{Encode, EncodePem};
    use x509_cert::request::{CertReq, CertReqInfo, Version};
    let (key, _) = LocalSigner::generate(alg).unwrap();
    let info = CertReqInfo {
        version: Version::V1,
        subject: format!("CN={cn}").parse().unwrap(),
        public_key: key.public_key().clone(),
        attributes: Default::default(),
    };
    let tbs = info.to_der().unwrap();
    let sig = futures::executor::block_on(sign_verified(&key, &tbs)).unwrap();
    CertReq {
        info,
        algorithm: key.algorithm(),
        signature: der::asn1::BitString::from_bytes(&sig).unwrap(),
    }
    .to_pem(der::pem::LineEnding::LF)
    .unwrap()
}

/// A CA repository of `n` requests (1,000 per folder, as a large organisation would shard them),
/// initialised with a single CA of `ca_alg`. Returns (repo, data dir).
struct Repo {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    data: PathBuf,
}

impl Repo {
    fn new(n: usize, csr_kind: &str, ca_alg: &str) -> Repo {
        let r = Repo::committed(
            n,
            csr_kind,
            "ca: {name: bench, certificate: ca/ca.pem}\n\
             output: {dir: issued, crl: crl/bench.crl, bundle: ca/bundle.pem}\n",
        );
        run(gitca(
            &r.repo,
            &r.data,
            &["init", "--single", "--key-algorithm", ca_alg],
        ));
        r
    }

    /// `n` requests, a policy allowing them and `gitca_yaml`, committed; no CA yet.
    fn committed(n: usize, csr_kind: &str, gitca_yaml: &str) -> Repo {
        let pool = csrs(csr_kind, n);
        let tmp = tempfile::Builder::new()
            .prefix("gitca-bench")
            .tempdir_in(work_dir())
            .unwrap();
        let repo = tmp.path().join("repo");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(repo.join("policies")).unwrap();
        std::fs::write(repo.join("gitca.yaml"), gitca_yaml).unwrap();
        std::fs::write(
            repo.join("policies/bench.yaml"),
            "select: {paths: [\"requests/**\"]}\n\
             rules:\n  dns: {subdomains_of: [bench.example.com]}\n  max_lifetime: 90d\n  \
             key_types: [p256, rsa]\n  usages: [server_auth]\n",
        )
        .unwrap();
        for i in 0..n {
            write_request(&repo, &pool, i, "");
        }
        sh(&repo, "git", &["init", "-q", "-b", "main"]);
        sh(&repo, "git", &["config", "user.name", "bench"]);
        sh(&repo, "git", &["config", "user.email", "bench@example.com"]);
        // No automatic maintenance: with hundreds of thousands of loose objects, every
        // `git commit` of the harness would start `git gc` in the background, beside the runs
        // measured.
        sh(&repo, "git", &["config", "gc.auto", "0"]);
        sh(&repo, "git", &["config", "maintenance.auto", "false"]);
        // Each blob streamed into a pack as it is added (git's bulk check-in for files over
        // `core.bigFileThreshold`) instead of a loose object: `git repack` would then delete
        // a loose object per request just before the run measured, and ext4 without a journal
        // (this machine's) skips every inode freed in the last minutes when it allocates one,
        // which tripled the time gitca's work-tree files took.
        sh(
            &repo,
            "git",
            &["-c", "core.bigFileThreshold=1", "add", "-A"],
        );
        sh(&repo, "git", &["commit", "-q", "-m", "requests"]);
        // One pack, as the clone a CI job runs on has.
        sh(&repo, "git", &["repack", "-adq"]);
        Repo {
            _tmp: tmp,
            repo,
            data,
        }
    }

    fn apply(&self, extra_env: &[(&str, &str)]) -> Run {
        self.apply_on(extra_env, false)
    }

    /// Applies, on one CPU if `one_cpu`.
    fn apply_on(&self, extra_env: &[(&str, &str)], one_cpu: bool) -> Run {
        let mut c = gitca(&self.repo, &self.data, &["apply", "--format", "json"]);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        if one_cpu {
            on_one_cpu(&mut c);
        }
        run(c)
    }
}

fn request_path(i: usize) -> String {
    format!("requests/b{:03}/r{i:06}", i / 1000)
}

fn write_request(repo: &Path, pool: &Path, i: usize, extra: &str) {
    let p = repo.join(request_path(i));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::copy(
        pool.join(format!("{i}.csr.pem")),
        p.with_extension("csr.pem"),
    )
    .unwrap();
    std::fs::write(
        p.with_extension("yaml"),
        format!(
            "csr: r{i:06}.csr.pem\nlifetime: 30d\nsans: {{dns: [r{i}.bench.example.com]}}\n{extra}"
        ),
    )
    .unwrap();
}

fn issued_count(r: &Run) -> usize {
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("apply --format json");
    v["issued"].as_array().map_or(0, |a| a.len())
}

// ---------------------------------------------------------------------------------------------
// 1. Issuance
// ---------------------------------------------------------------------------------------------

/// `openssl speed` sign and verify rates for an algorithm, per core, with `processes` of it
/// at once (`-multi`): what a core does while that many are busy.
fn openssl_speed(alg: &str, processes: usize) -> (f64, f64) {
    let multi = processes.to_string();
    let mut args = vec!["speed", "-seconds", "3", "-mr"];
    if processes > 1 {
        args.extend(["-multi", &multi]);
    }
    args.push(alg);
    let o = sh(Path::new("."), "openssl", &args);
    // -mr lines: +F2:n:bits:sign/s:verify/s (RSA F2, ECDSA F4); OpenSSL 3.2 and later add
    // RSA's encrypt/s and decrypt/s after them, so the rates are read by position. With
    // -multi, each process's line comes after "Got: ", and the line that starts with +F is
    // their sum. Returns (sign/s, verify/s) per process.
    let line = o
        .lines()
        .find(|l| l.starts_with("+F"))
        .unwrap_or_else(|| panic!("openssl speed {alg}: {o}"));
    let f: Vec<&str> = line.split(':').collect();
    let rate = |i: usize| -> f64 {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("openssl speed {alg}: no rate at field {i} of {line}"))
    };
    (rate(3) / processes as f64, rate(4) / processes as f64)
}

/// Certificates per second of a shell loop of `openssl x509 -req` over the same CSRs.
fn openssl_loop(pool: &Path, ca_alg: &str, count: usize) -> f64 {
    let tmp = tempfile::tempdir_in(work_dir()).unwrap();
    let d = tmp.path();
    let newkey = match ca_alg {
        "p256" => "ec:-pkeyopt ec_paramgen_curve:P-256".to_string(),
        "p384" => "ec:-pkeyopt ec_paramgen_curve:P-384".to_string(),
        _ => "rsa:2048".to_string(),
    };
    let mut args: Vec<String> = vec!["req".into(), "-x509".into(), "-nodes".into()];
    let (alg, opt) = newkey.split_once(':').map_or((newkey.as_str(), ""), |x| x);
    args.extend([
        "-newkey".into(),
        if alg == "ec" {
            "ec".into()
        } else {
            newkey.clone()
        },
    ]);
    if alg == "ec" {
        args.extend(opt.split(' ').map(String::from));
    }
    args.extend(
        [
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=loop CA",
            "-days",
            "30",
        ]
        .map(String::from),
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    sh(d, "openssl", &a);
    let script = format!(
        "for i in $(seq 0 {}); do openssl x509 -req -in {}/$i.csr.pem -CA ca.pem -CAkey ca.key \
         -CAcreateserial -days 30 -sha256 -out $i.pem 2>/dev/null || exit 1; done",
        count - 1,
        pool.display()
    );
    let start = Instant::now();
    sh(d, "sh", &["-c", &script]);
    count as f64 / start.elapsed().as_secs_f64()
}

/// The CA keys issuance is measured with, each with its `openssl speed` algorithm.
const CA_KEYS: [(&str, &str); 3] = [
    ("p256", "ecdsap256"),
    ("p384", "ecdsap384"),
    ("rsa2048", "rsa2048"),
];

/// Certificates per second the crypto allows: one CSR verify, one CA sign and one CA verify
/// (gitca checks its own signature) each, at these rates.
fn floor(csr_verify: f64, sign: f64, verify: f64) -> f64 {
    1.0 / (1.0 / csr_verify + 1.0 / sign + 1.0 / verify)
}

/// One timed issuance and the floors measured just before it.
struct Measured {
    /// Certificates per second, end to end.
    rate: f64,
    /// Per core, measured as the run uses the machine (with `-multi` for more than one thread).
    floor: f64,
    /// Per core, of one `openssl speed` process with the other CPUs free.
    alone: f64,
    cpu_secs: f64,
    major_faults: i64,
    steal_secs: f64,
}

impl Measured {
    fn ratio(&self, threads: usize) -> f64 {
        self.rate / threads as f64 / self.floor
    }

    /// The ratio to the floor of one `openssl speed` process with the other CPUs free.
    fn ratio_alone(&self, threads: usize) -> f64 {
        self.rate / threads as f64 / self.alone
    }

    /// The ratio, and what the host did to the run where it did anything.
    fn described(&self, threads: usize) -> String {
        let mut what = Vec::new();
        match self.major_faults {
            0 => {}
            1 => what.push("1 major fault".to_string()),
            n => what.push(format!("{n} major faults")),
        }
        if self.steal_secs >= 0.05 {
            what.push(format!("steal {:.2} s", self.steal_secs));
        }
        let ratio = format!("{:.0}%", 100.0 * self.ratio(threads));
        if what.is_empty() {
            ratio
        } else {
            format!("{ratio} ({})", what.join(", "))
        }
    }
}

/// `only_ca` (p256, p384, rsa2048) and `only_threads` run some rows alone: the target's is
/// `--ca p256 --threads 1`, which runs both one-thread rows (on one CPU, and with the others
/// free for git). `runs` per row: by default [`P256_RUNS`] with a P-256 CA and one with the others.
fn issuance(n: usize, only_ca: Option<&str>, only_threads: Option<usize>, runs: Option<usize>) {
    let runs_of = |ca_alg: &str| runs.unwrap_or(if ca_alg == "p256" { P256_RUNS } else { 1 });
    let pool = csrs("p256", n);
    let mut t = String::new();
    writeln!(
        t,
        "### Issuance: {n} new requests (P-256 subject keys), `gitca apply` end to end\n\n\
         Floor per certificate = one CSR verify (P-256) + one CA sign + one CA verify (gitca checks \
         its own signature), from `openssl speed` on the same machine, per core, measured just \
         before each run, as the run uses the machine: one process for one thread, and for more, \
         as many processes at once (`-multi`), whose rates per core are what a core does while \
         the others are busy too. The floor of one process alone is beside it. With a P-256 CA \
         of 64 or more signatures, gitca checks its own by tables \
         of the CA key's multiples, about three times faster than a general verify (`-- speed`). \
         One core: the run and every git it starts are on one CPU (its \
         affinity). `1 of {cores}`: gitca signs on one thread, and git may use the other CPUs. \
         CPU s: user and system time of gitca and its git commands. gitca's, git's and openssl's \
         programs and libraries are held in memory for the whole bench (above the table: how). \
         {runs_per_row} Of several, the row is the run with the median ratio to its \
         floor measured as it ran, whose columns (the floor of one process alone and its ratio \
         too) the row gives. The last column gives every run's ratio, in order, with the pages \
         it read from disk (major faults) and the time the host ran something else on the \
         machine's CPUs (steal, summed over all of them), where there were any.\n\n\
         | CA key | CPUs | threads | certs/s | CPU s | per core | floor/core | per core / floor | floor/core of one process alone | per core / it | openssl x509 -req loop | gitca / loop | runs: per core / floor beside it |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        cores = cores(),
        runs_per_row = match (runs_of("p256"), runs_of("p384")) {
            (all, others) if all == others => format!("Runs per row: {all}."),
            (target, others) => {
                format!(
                    "Runs per row: {target} with a P-256 CA (the target), {others} with the \
                     others."
                )
            }
        },
    )
    .unwrap();
    // Below the table: each row's spread, where it has one.
    let mut spreads = String::new();
    // (threads, on one CPU) per row.
    let rows: Vec<(usize, bool)> = match only_threads {
        Some(1) => vec![(1, true), (1, false)],
        Some(t) => vec![(t, false)],
        None => vec![(1, true), (1, false), (cores(), false)],
    };
    let mut kept = Vec::new();
    for &(ca_alg, speed_alg) in CA_KEYS
        .iter()
        .filter(|(ca, _)| only_ca.is_none_or(|only| only == *ca))
    {
        let loop_rate = openssl_loop(&pool, ca_alg, 200.min(n));
        let runs = runs_of(ca_alg);
        for &(threads, one_cpu) in &rows {
            let mut measured = Vec::new();
            for _ in 0..runs {
                let repo = Repo::new(n, "p256", ca_alg);
                // The machine is shared: the floors are measured just before each run, after
                // the repository is made (its writes settle meanwhile).
                let floor_of = |processes: usize| {
                    let (sign, verify) = openssl_speed(speed_alg, processes);
                    // With a P-256 CA, the CSR verify is the same measurement's verify.
                    let csr = if ca_alg == "p256" {
                        verify
                    } else {
                        openssl_speed("ecdsap256", processes).1
                    };
                    floor(csr, sign, verify)
                };
                let alone = floor_of(1);
                // As many processes as the run keeps CPUs busy: more threads than CPUs share
                // them, and so would more processes, which would lower the floor.
                let busy = if threads > 1 {
                    floor_of(threads.min(cores()))
                } else {
                    alone
                };
                let r = repo.apply_on(&[("GITCA_THREADS", &threads.to_string())], one_cpu);
                // Deleted at the end, not before the next run (see `Repo::committed`).
                kept.push(repo);
                assert_eq!(issued_count(&r), n, "all issued");
                let m = Measured {
                    rate: n as f64 / r.secs,
                    floor: busy,
                    alone,
                    cpu_secs: r.cpu_secs,
                    major_faults: r.major_faults,
                    steal_secs: r.steal_secs,
                };
                eprintln!(
                    "{ca_alg} x{threads}{}: {:.0}/s ({:.2}s, CPU {:.2}s, major faults: {}, steal \
                     {:.2}s), floor {busy:.0}/core ({alone:.0} alone)",
                    if one_cpu { " on one CPU" } else { "" },
                    m.rate,
                    r.secs,
                    r.cpu_secs,
                    r.major_faults,
                    r.steal_secs
                );
                measured.push(m);
            }
            // The row is the run whose ratio is the median, so its columns agree.
            let mut by_ratio: Vec<&Measured> = measured.iter().collect();
            by_ratio.sort_by(|a, b| a.ratio(threads).total_cmp(&b.ratio(threads)));
            let median = by_ratio[by_ratio.len() / 2];
            let each: Vec<String> = measured.iter().map(|m| m.described(threads)).collect();
            let each = each.join(", ");
            let per_core = median.rate / threads as f64;
            let (alone, of_alone) = if threads > 1 {
                (
                    format!("{:.0}", median.alone),
                    format!("{:.0}%", 100.0 * median.ratio_alone(threads)),
                )
            } else {
                ("–".to_string(), "–".to_string())
            };
            let cpus = match (one_cpu, threads) {
                (true, _) => "1".to_string(),
                (false, 1) => format!("1 of {}", cores()),
                (false, _) => cores().to_string(),
            };
            writeln!(
                t,
                "| {ca_alg} | {cpus} | {threads} | {:.0} | {:.2} | {per_core:.0} | {:.0} | {:.0}% | {alone} | {of_alone} | {loop_rate:.0}/s | {:.0}x | {each} |",
                median.rate,
                median.cpu_secs,
                median.floor,
                100.0 * median.ratio(threads),
                median.rate / loop_rate
            )
            .unwrap();
            if runs > 1 {
                writeln!(
                    spreads,
                    "- {ca_alg}, {cpus} CPU(s), {threads} thread(s): {}",
                    spread(&measured, threads)
                )
                .unwrap();
            }
        }
    }
    println!("{t}");
    if !spreads.is_empty() {
        println!(
            "Each row's runs, against the floor measured as each ran (and, with more than one \
             thread, against one process alone):\n\n{spreads}"
        );
    }
}

/// The runs' ratios to their floors as quartiles, and how many reach the target's 70%; with
/// more than one thread, the same against the floor of one process alone, over all the runs
/// (its middle run need not be the row's).
fn spread(measured: &[Measured], threads: usize) -> String {
    let of = |ratio: &dyn Fn(&Measured) -> f64| {
        let mut r: Vec<f64> = measured.iter().map(|m| 100.0 * ratio(m)).collect();
        r.sort_by(f64::total_cmp);
        let last = r.len() - 1;
        // The runs nearest the quarters, as far from either end. The middle one is chosen as
        // the row's run is (`by_ratio[len / 2]`), so against the floor measured as it ran it
        // is that run.
        let upper = (0.75 * last as f64).round() as usize;
        let middle = r.len() / 2;
        format!(
            "min {:.0}%, quartiles {:.0}% / {:.0}% / {:.0}%, max {:.0}%, {} of {} at 70% or more \
             (before rounding)",
            r[0],
            r[last - upper],
            r[middle],
            r[upper],
            r[last],
            r.iter().filter(|&&x| x >= 70.0).count(),
            r.len()
        )
    };
    let busy = of(&|m| m.ratio(threads));
    if threads > 1 {
        let alone = of(&|m| m.ratio_alone(threads));
        format!("{busy}; against one process alone: {alone}")
    } else {
        busy
    }
}

/// The rates of the crypto library gitca signs and verifies with (AWS-LC), one thread, beside
/// `openssl speed`'s: whether the floor is the library's or gitca's.
fn speed() {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
        ParsedPublicKey, UnparsedPublicKey,
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    // About a leaf TBSCertificate's size.
    let msg = [0x5au8; 450];
    let per_second = |op: &mut dyn FnMut()| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < 3.0 {
            for _ in 0..100 {
                op();
            }
            n += 100;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let sig = key.sign(&rng, &msg).unwrap();
    let point = key.public_key().as_ref().to_vec();
    let sign = per_second(&mut || {
        std::hint::black_box(key.sign(&rng, &msg).unwrap());
    });
    // gitca's own signatures: the CA key is parsed once per run.
    let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point).unwrap();
    let verify = per_second(&mut || {
        parsed.verify_sig(&msg, sig.as_ref()).unwrap();
    });
    // A CSR's: its key is parsed (and checked to lie on the curve) for its one signature.
    let verify_csr = per_second(&mut || {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point)
            .verify(&msg, sig.as_ref())
            .unwrap();
    });
    // The rates above, like `openssl speed`'s, repeat one message and one signature: the
    // branch predictor then learns the variable-time verify's branches (the inverse of `s`,
    // the windows of the scalars). An issuance sees a new message, signature and CSR key each
    // time, as here.
    const DISTINCT: usize = 2048;
    let msgs: Vec<[u8; 450]> = (0..DISTINCT)
        .map(|i| {
            let mut m = msg;
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<_> = msgs.iter().map(|m| key.sign(&rng, m).unwrap()).collect();
    let csrs: Vec<(Vec<u8>, Vec<u8>)> = msgs
        .iter()
        .map(|m| {
            let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
            let s = k.sign(&rng, m).unwrap();
            (k.public_key().as_ref().to_vec(), s.as_ref().to_vec())
        })
        .collect();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % DISTINCT;
        i
    };
    let d_sign = per_second(&mut || {
        std::hint::black_box(key.sign(&rng, &msgs[next()]).unwrap());
    });
    let d_verify = per_second(&mut || {
        let i = next();
        parsed.verify_sig(&msgs[i], sigs[i].as_ref()).unwrap();
    });
    // gitca's check of its own signatures since the twenty-sixth session: tables of the CA
    // key's multiples (domain/fixed_key.rs), made once per run.
    let spki = spki::SubjectPublicKeyInfoOwned::from_key(
        &p256::PublicKey::from_sec1_bytes(&point).unwrap(),
    )
    .unwrap();
    let alg = spki::AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
        parameters: None,
    };
    let start = Instant::now();
    let tables = gitca::domain::csr::SignatureVerifier::for_many(&spki, &alg).unwrap();
    let tables_ms = start.elapsed().as_secs_f64() * 1e3;
    assert!(tables.has_tables());
    let d_verify_tables = per_second(&mut || {
        let i = next();
        tables.verify(&msgs[i], sigs[i].as_ref()).unwrap();
    });
    // As gitca checks them since the thirty-first session: in jobs of 32 whose `s` are
    // inverted together (`SignatureVerifier::verify_many`); the rate counts signatures.
    let together: Vec<Vec<(&[u8], &[u8])>> = (0..DISTINCT / 32)
        .map(|j| {
            (j * 32..(j + 1) * 32)
                .map(|i| (&msgs[i][..], sigs[i].as_ref()))
                .collect()
        })
        .collect();
    let mut job = 0;
    let d_verify_together = 32.0
        * per_second(&mut || {
            job = (job + 1) % together.len();
            assert!(tables.verify_many(&together[job]).iter().all(Result::is_ok));
        });
    let d_verify_csr = per_second(&mut || {
        let i = next();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &csrs[i].0)
            .verify(&msgs[i], &csrs[i].1)
            .unwrap();
    });
    let (o_sign, o_verify) = openssl_speed("ecdsap256", 1);
    println!(
        "### P-256 sign and verify, one thread\n\n\
         | library | sign/s | verify/s (key parsed once) | verify/s (key parsed each time) | floor (CSR verify + sign + verify)/s |\n\
         | --- | --- | --- | --- | --- |\n\
         | AWS-LC (gitca, 450-byte message) | {sign:.0} | {verify:.0} | {verify_csr:.0} | {:.0} |\n\
         | AWS-LC, {DISTINCT} distinct messages, signatures and CSR keys | {d_sign:.0} | {d_verify:.0} | {d_verify_csr:.0} | {:.0} |\n\
         | AWS-LC, the same, gitca's check of its own signatures by the CA key's tables (made in {tables_ms:.1} ms) | {d_sign:.0} | {d_verify_tables:.0} | {d_verify_csr:.0} | {:.0} |\n\
         | the same, by the tables in jobs of 32 (their `s` inverted together), as gitca checks them | {d_sign:.0} | {d_verify_together:.0} | {d_verify_csr:.0} | {:.0} |\n\
         | openssl speed | {o_sign:.0} | {o_verify:.0} | – | {:.0} |\n",
        floor(verify_csr, sign, verify),
        floor(d_verify_csr, d_sign, d_verify),
        floor(d_verify_csr, d_sign, d_verify_tables),
        floor(d_verify_csr, d_sign, d_verify_together),
        floor(o_verify, o_sign, o_verify)
    );
}

/// Runs per row with a P-256 CA, the target's: one run on this shared machine varies by 10%,
/// and now and then by 30%.
const P256_RUNS: usize = 5;

// ---------------------------------------------------------------------------------------------
// 2./3. No-op and small-change reconciles, peak memory
// ---------------------------------------------------------------------------------------------

fn noop(sizes: &[usize]) {
    let mut t = String::from(
        "### Reconcile of an issued repository (local signer and state)\n\n\
         | requests | no-op (quiet) | peak RSS | no-op, unrelated file changed | peak RSS | 10 changed | peak RSS | 10 changed, `index.skipHash` | peak RSS | no-op, `--full-scan` | peak RSS |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for &n in sizes {
        let repo = Repo::new(n, "p256", "p256");
        let first = repo.apply(&[]);
        eprintln!(
            "{n}: initial issuance {:.1}s, peak RSS {:.0} MiB",
            first.secs, first.max_rss_mib
        );
        // Packed, as a clone is and as git's automatic maintenance leaves a working repository,
        // instead of the loose objects the setup and the first issuance wrote.
        sh(&repo.repo, "git", &["repack", "-adq"]);
        // The first no-op plans (incrementally) and leaves the quiet record; later ones are quiet.
        let r = repo.apply(&[]);
        assert_eq!(scan_kind(&r), "incremental");
        let quiet = median3(|| {
            let r = repo.apply(&[]);
            assert_eq!(issued_count(&r), 0);
            assert_eq!(scan_kind(&r), "quiet");
            r
        });
        // A file no plan reads changes: the tree differs only there, so the run stays quiet
        // (comparing the two trees by their changed folders).
        let mut round = 0;
        let unrelated = median3(|| {
            round += 1;
            std::fs::write(repo.repo.join("NOTES.md"), format!("{round}\n")).unwrap();
            sh(&repo.repo, "git", &["add", "-A"]);
            sh(&repo.repo, "git", &["commit", "-q", "-m", "notes"]);
            let r = repo.apply(&[]);
            assert_eq!(issued_count(&r), 0);
            assert_eq!(scan_kind(&r), "quiet");
            r
        });
        let full = median3(|| {
            run(gitca(
                &repo.repo,
                &repo.data,
                &["apply", "--format", "json", "--full-scan"],
            ))
        });
        // Ten requests change (a new lifetime), committed as a reviewer would merge them.
        // Rounds alternate between git's default index and `index.skipHash` (git 2.40: no
        // SHA-1 over the whole index when git reads or writes it), paired against the host's
        // drift.
        let pool = csrs("p256", n);
        let (mut changed, mut skip_hash) = (Vec::new(), Vec::new());
        for round in 0..6 {
            let skip = round % 2 == 1;
            sh(
                &repo.repo,
                "git",
                &["config", "index.skipHash", &skip.to_string()],
            );
            sh(&repo.repo, "git", &["update-index", "--force-write-index"]);
            for k in 0..10 {
                let i = (k * n / 10 + round) % n;
                write_request(&repo.repo, &pool, i, &format!("# change {round}\n"));
            }
            sh(&repo.repo, "git", &["add", "-A"]);
            sh(&repo.repo, "git", &["commit", "-q", "-m", "ten changed"]);
            let r = repo.apply(&[]);
            assert_eq!(issued_count(&r), 10, "ten reissued");
            match skip {
                false => changed.push(r),
                true => skip_hash.push(r),
            }
        }
        sh(&repo.repo, "git", &["config", "--unset", "index.skipHash"]);
        for runs in [&mut changed, &mut skip_hash] {
            runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        }
        let (ch, sh_ch) = (&changed[1], &skip_hash[1]);
        let ms = |r: &Run| format!("{:.0} ms | {:.0} MiB", r.secs * 1e3, r.max_rss_mib);
        writeln!(
            t,
            "| {n} | {} | {} | {} | {} | {} |",
            ms(&quiet),
            ms(&unrelated),
            ms(ch),
            ms(sh_ch),
            ms(&full)
        )
        .unwrap();
        eprintln!(
            "{n}: quiet {:.0} ms, unrelated change {:.0} ms, 10 changed {:.0} ms ({:.0} ms with index.skipHash)",
            quiet.secs * 1e3,
            unrelated.secs * 1e3,
            ch.secs * 1e3,
            sh_ch.secs * 1e3
        );
    }
    println!("{t}");
}

fn scan_kind(r: &Run) -> String {
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("apply --format json");
    v["scan"]["kind"].as_str().unwrap_or_default().to_string()
}

fn median3(mut f: impl FnMut() -> Run) -> Run {
    let mut v: Vec<Run> = (0..3).map(|_| f()).collect();
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v.swap_remove(1)
}

// ---------------------------------------------------------------------------------------------
// 4. KMS against moto
// ---------------------------------------------------------------------------------------------

/// A moto server from tests/moto_launcher.py on a free port (optionally throttling Sign).
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto(python: &str, rate: Option<u32>) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Command::new(python);
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/moto_launcher.py"
    ))
    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(r) = rate {
        c.args(["--kms-sign-rate", &r.to_string()]);
    }
    // Dropping the Moto kills and reaps the server.
    let m = Moto {
        child: c.spawn().expect("start tests/moto_launcher.py"),
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return m;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("moto did not start");
}

const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// Two P-256 signing keys (root, issuing) and a bucket; returns (root, issuing, bucket).
fn aws_setup(endpoint: &str) -> (String, String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "bench",
            ))
            .load()
            .await;
        let kms = aws_sdk_kms::Client::new(&conf);
        let mut keys = Vec::new();
        for _ in 0..2 {
            let k = kms
                .create_key()
                .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
                .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
                .send()
                .await
                .unwrap();
            keys.push(k.key_metadata.unwrap().arn.unwrap());
        }
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&conf)
                .force_path_style(true)
                .build(),
        );
        let bucket = format!("bench-{}", std::process::id());
        let _ = s3.create_bucket().bucket(&bucket).send().await;
        (keys.remove(0), keys.remove(0), bucket)
    })
}

fn kms_run(python: &str, n: usize, in_flight: usize, rate: Option<u32>) -> (f64, f64, u64, u64) {
    let m = moto(python, rate);
    let (root, issuing, bucket) = aws_setup(&m.endpoint);
    let r = Repo::committed(
        n,
        "p256",
        &format!(
            "ca: {{name: bench, certificate: ca/ca.pem, chain: [ca/root.pem]}}\n\
             output: {{dir: issued, crl: crl/bench.crl, bundle: ca/bundle.pem}}\n\
             signer:\n  kms:\n    key: {issuing}\n    root_key: {root}\n    max_in_flight: {in_flight}\n    max_retries: 50\n\
             state:\n  s3:\n    bucket: {bucket}\n    prefix: state/bench\n    force_path_style: true\n"
        ),
    );
    let (repo, data) = (&r.repo, &r.data);
    let with_aws = |mut c: Command| {
        c.env("AWS_ENDPOINT_URL", &m.endpoint);
        for (k, v) in AWS_ENV {
            c.env(k, v);
        }
        c
    };
    run(with_aws(gitca(repo, data, &["init"])));
    let applied = run(with_aws(gitca(repo, data, &["apply", "--format", "json"])));
    let v: serde_json::Value = serde_json::from_str(&applied.stdout).unwrap();
    assert_eq!(v["issued"].as_array().unwrap().len(), n);
    let sign_secs = v["sign_seconds"].as_f64().unwrap();
    (
        applied.secs,
        sign_secs,
        v["signer"]["calls"].as_u64().unwrap(),
        v["signer"]["retries"].as_u64().unwrap(),
    )
}

fn kms(python: &str, n: usize, rate: Option<u32>) {
    let mut t = format!(
        "### KMS signer against moto: {n} certificates, `gitca apply` end to end (state in moto S3)\n\n\
         | signatures in flight | apply | signing | signatures/s | KMS calls | retried |\n\
         | --- | --- | --- | --- | --- | --- |\n"
    );
    for in_flight in [1, 4, 16, 64] {
        let (secs, sign, calls, retries) = kms_run(python, n, in_flight, None);
        writeln!(
            t,
            "| {in_flight} | {secs:.1} s | {sign:.1} s | {:.0} | {calls} | {retries} |",
            n as f64 / sign
        )
        .unwrap();
        eprintln!("kms x{in_flight}: {:.0}/s", n as f64 / sign);
    }
    writeln!(
        t,
        "\n### KMS under throttling: moto answers ThrottlingException above the limit; 16 in flight\n\n\
         | limit (Sign/s) | signing | achieved signatures/s | of the limit | KMS calls | retried |\n\
         | --- | --- | --- | --- | --- | --- |"
    )
    .unwrap();
    for limit in rate.map_or(vec![50, 100], |r| vec![r]) {
        let (_, sign, calls, retries) = kms_run(python, n, 16, Some(limit));
        let achieved = n as f64 / sign;
        writeln!(
            t,
            "| {limit} | {sign:.1} s | {achieved:.1} | {:.0}% | {calls} | {retries} |",
            100.0 * achieved / limit as f64
        )
        .unwrap();
        eprintln!("kms throttled at {limit}/s: {achieved:.1}/s");
    }
    println!("{t}");
}

// ---------------------------------------------------------------------------------------------
// 5. CRL
// ---------------------------------------------------------------------------------------------

fn crl(n: usize) {
    use gitca::domain::crl::{self, CrlEntry};
    use gitca::domain::profile::{self, CaParams, Urls};
    use gitca::domain::revocation::Reason;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (signer, _) = LocalSigner::generate(KeyAlgorithm::P256).unwrap();
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let params = CaParams {
        subject: gitca::domain::names::Subject {
            common_name: Some("bench CA".into()),
            ..Default::default()
        }
        .to_name()
        .unwrap(),
        public_key: signer.public_key().clone(),
        self_algorithm: signer.algorithm(),
        serial: vec![0x11; 20],
        not_before: now,
        not_after: now + time::Duration::days(30),
        path_len: None,
    };
    let unsigned = profile::ca(&params, None, &Urls::default()).unwrap();
    let sig = rt
        .block_on(sign_verified(&signer, &unsigned.tbs_der))
        .unwrap();
    let ca_der = unsigned.assemble(&sig).unwrap();
    let ca = <x509_cert::Certificate as der::Decode>::from_der(&ca_der).unwrap();
    let issuer = gitca::app::context::issuer_of(&ca).unwrap();
    let entries: Vec<CrlEntry> = (0..n as u64)
        .map(|i| CrlEntry {
            serial_hex: format!("{:040x}", (1u128 << 120) + i as u128 * 7919),
            date: now,
            reason: Reason::KeyCompromise,
        })
        .collect();
    let mut times = Vec::new();
    let mut der = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let tbs = crl::tbs(&issuer, 1, now, now + time::Duration::days(7), &entries).unwrap();
        let built = start.elapsed().as_secs_f64();
        let sig = rt.block_on(sign_verified(&signer, &tbs)).unwrap();
        der = crl::assemble(&tbs, &signer.algorithm(), &sig).unwrap();
        times.push((built, start.elapsed().as_secs_f64()));
    }
    times.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (built, total) = times[1];
    // The same CRL through openssl: parse and verify, as a relying party would.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("crl.der"), &der).unwrap();
    {
        use der::EncodePem;
        std::fs::write(
            tmp.path().join("ca.pem"),
            ca.to_pem(der::pem::LineEnding::LF).unwrap(),
        )
        .unwrap();
    }
    let start = Instant::now();
    let out = sh(
        tmp.path(),
        "openssl",
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout",
        ],
    );
    let openssl = start.elapsed().as_secs_f64();
    let _ = out;
    println!(
        "### CRL of {n} revoked certificates (P-256 CA, in process; median of 3)\n\n\
         | entries | build TBS | build + sign + verify + assemble | DER size | `openssl crl -CAfile` (parse + verify) |\n\
         | --- | --- | --- | --- | --- |\n\
         | {n} | {:.0} ms | {:.0} ms | {:.1} MiB | {:.0} ms |\n",
        built * 1e3,
        total * 1e3,
        der.len() as f64 / 1048576.0,
        openssl * 1e3
    );
}

/// The state every incremental reconcile reads in full: the index (`index.json` and its base) and
/// the plan basis, parsed and serialized in process for `n` certificates and requests. A run
/// writes the basis whole, and of the index the certificates changed since its base.
fn state(n: usize) {
    use gitca::domain::incremental::{Basis, Carried};
    use gitca::domain::state::{CertSummary, Index};
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let hex = |i: usize, salt: u8| {
        use sha2::Digest;
        base16ct::lower::encode_string(&sha2::Sha256::digest(
            [&i.to_be_bytes()[..], &[salt]].concat(),
        ))
    };
    let mut index = Index::new(hex(0, 0));
    let mut basis = Basis {
        version: "bench".into(),
        commit: hex(0, 1)[..40].to_string(),
        outputs_tree: Some(hex(0, 2)[..40].to_string()),
        requests: Default::default(),
    };
    for i in 0..n {
        let id = format!("{}.yaml", request_path(i));
        index.certs.insert(
            hex(i, 3)[..40].to_string(),
            CertSummary {
                request_id: id.clone(),
                request_hash: hex(i, 4),
                key_id: hex(i, 5),
                not_before: now,
                not_after: now + time::Duration::days(30),
                revoked: None,
                // As apply writes them: one round per 4,096 certificates.
                round: Some(hex(i / 4096, 6)[..40].into()),
            },
        );
        basis.requests.insert(
            id,
            Carried {
                csr: format!("{}.csr", request_path(i)),
                hash: hex(i, 4),
                lifetime_secs: 30 * 86400,
                policy: "bench".into(),
                revoke_superseded: false,
            },
        );
    }
    let median = |f: &mut dyn FnMut()| {
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[2]
    };
    let json = serde_json::to_vec(&index).unwrap();
    let text = basis.render();
    let index_parse = median(&mut || {
        let i: Index = serde_json::from_slice(&json).unwrap();
        assert_eq!(i.certs.len(), n);
    });
    let index_write_one_core = median(&mut || {
        let mut bytes = Vec::with_capacity(4096 + 400 * n);
        serde_json::to_writer(&mut bytes, &index).unwrap();
        assert_eq!(bytes.len(), json.len());
    });
    let index_write = median(&mut || {
        assert_eq!(index.to_json().unwrap().len(), json.len());
    });
    // Beside its base, the index object holds the certificates changed since: ten here.
    index.rebased("index-base/bench.json".into());
    for i in 0..10 {
        let c = index.certs.get_mut(&hex(i * 997, 3)[..40]).unwrap();
        c.not_after += time::Duration::seconds(1);
    }
    let own = index.to_json().unwrap();
    let own_parse = median(&mut || {
        let i: Index = serde_json::from_slice(&own).unwrap();
        assert_eq!(i.certs.len(), 10);
    });
    let own_write = median(&mut || {
        assert_eq!(index.to_json().unwrap().len(), own.len());
    });
    let basis_parse = median(&mut || {
        assert_eq!(Basis::parse(&text).unwrap().requests.len(), n);
    });
    let basis_render = median(&mut || {
        assert_eq!(basis.render().len(), text.len());
    });
    println!(
        "### State every incremental reconcile reads whole ({n} certificates and requests, in process; median of 5)\n\n\
         | object | size | parse | serialize | serialize on one core |\n\
         | --- | --- | --- | --- | --- |\n\
         | `index.json` whole, or its base | {:.1} MB | {index_parse:.0} ms | {index_write:.0} ms | {index_write_one_core:.0} ms |\n\
         | `index.json` beside its base, 10 certificates changed since | {:.1} KB | {own_parse:.1} ms | {own_write:.1} ms | |\n\
         | `plan-basis.txt` | {:.1} MB | {basis_parse:.0} ms | {basis_render:.0} ms | |\n",
        json.len() as f64 / 1e6,
        own.len() as f64 / 1e3,
        text.len() as f64 / 1e6,
    );
}
