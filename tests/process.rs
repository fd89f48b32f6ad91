//! The process a run is. How it takes the signals that end it: the ones it was started ignoring
//! stay ignored; the others get gitca's handler, which removes the git index lock it may hold
//! and then ends the run as the signal would. And where its threads may run.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

const SIGNALS: [(&str, u32); 4] = [("HUP", 1), ("INT", 2), ("QUIT", 3), ("TERM", 15)];

/// A signal mask of `/proc/<pid>/status` (`SigIgn`, `SigCgt`).
fn mask(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = (status.lines())
        .find_map(|l| l.strip_prefix(&format!("{field}:\t")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(signal: u32) -> u64 {
    1 << (signal - 1)
}

/// Waits until `run` (its standard error piped) says it hangs at its test point.
fn held_at_test_point(run: &mut Started) {
    let mut stderr = BufReader::new(run.0.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("hanging at") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the run ended before its test point"
        );
    }
}

/// Started by a script as a background job, SIGINT and SIGQUIT come ignored: gitca used to set
/// no handler at all then, so SIGTERM (a CI job cancelled) left the index lock behind. Each
/// signal is now taken on its own. Read while the run hangs at a test point, then SIGTERM ends
/// it as the signal's default action would.
#[test]
fn a_run_handles_each_termination_signal_it_does_not_ignore() {
    // This test's own ignored signals are the run's too: a shell cannot undo them.
    let inherited = mask("self", "SigIgn");
    for trap in ["", "INT QUIT"] {
        // A repository each: the killed run keeps its lease.
        let env = Env::from(EXAMPLE, &["revocations.yaml"]);
        env.init(&[]);
        env.commit_all("init");
        let trapped: u64 = (SIGNALS.iter())
            .filter(|(name, _)| trap.contains(name))
            .map(|&(_, n)| bit(n))
            .sum();
        let ignore = match trap {
            "" => String::new(),
            _ => format!("trap '' {trap}; "),
        };
        let script = format!("{ignore}exec \"$0\" apply --hang-at after-intent");
        let run = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_gitca")])
            .current_dir(&env.repo)
            .env("GITCA_DATA_DIR", &env.data)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut run = Started(run);
        let pid = run.0.id().to_string();
        held_at_test_point(&mut run);
        let (ignored, caught) = (mask(&pid, "SigIgn"), mask(&pid, "SigCgt"));
        for (name, n) in SIGNALS {
            let at = format!("SIG{name}, trapped {trap:?}");
            match (inherited | trapped) & bit(n) != 0 {
                true => {
                    assert!(ignored & bit(n) != 0, "{at}: still ignored");
                    assert!(caught & bit(n) == 0, "{at}: no handler");
                }
                false => assert!(caught & bit(n) != 0, "{at}: gitca's handler"),
            }
        }
        assert!(inherited & bit(15) == 0, "this test cannot check SIGTERM");
        // SAFETY: sends a signal to the child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(run.0.id() as i32, libc::SIGTERM) }, 0);
        let status = run.0.wait().unwrap();
        assert_eq!(status.signal(), Some(15), "ended by SIGTERM: {status:?}");
    }
}

/// The CPUs a `/proc/…/status` text allows, from its `Cpus_allowed_list` ("0-1", "0,2-3").
fn cpus_allowed(status: &str) -> Vec<usize> {
    let list = (status.lines())
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {status}"));
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (from, to) = part.split_once('-').unwrap_or((part, part));
        cpus.extend(from.parse::<usize>().unwrap()..=to.parse::<usize>().unwrap());
    }
    cpus
}

/// Each thread of a process: its name and the CPUs it may run on.
fn threads_of(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        // A thread that ended since the folder was listed is gone.
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("status")),
        ) else {
            continue;
        };
        threads.push((name.trim().to_string(), cpus_allowed(&status)));
    }
    threads
}

/// With a worker for each CPU the run may use, each worker is kept on a CPU of its own; with
/// fewer, and for every other thread, the scheduler chooses among them all.
#[test]
fn workers_are_kept_on_a_cpu_each_only_when_there_is_one_for_every_cpu() {
    let allowed = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    for workers in [allowed.len(), 1] {
        let env = Env::from(EXAMPLE, &["revocations.yaml"]);
        env.init(&[]);
        let mut run = Started(
            env.command_in(&env.repo, &["apply", "--hang-at", "after-intent"])
                .env("GITCA_THREADS", workers.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        held_at_test_point(&mut run);
        let threads = threads_of(run.0.id());
        let (pool, others): (Vec<_>, Vec<_>) =
            (threads.into_iter()).partition(|(name, _)| name.starts_with("gitca-worker-"));
        assert_eq!(pool.len(), workers, "{pool:?}");
        assert!(!others.is_empty());
        for (name, cpus) in &others {
            assert_eq!(cpus, &allowed, "{name} may run on every CPU");
        }
        let mut kept: Vec<usize> = pool.iter().flat_map(|(_, cpus)| cpus.clone()).collect();
        kept.sort();
        if workers == allowed.len() {
            assert!(pool.iter().all(|(_, cpus)| cpus.len() == 1), "{pool:?}");
            assert_eq!(kept, allowed, "a CPU each: {pool:?}");
        } else {
            assert!(pool.iter().all(|(_, cpus)| cpus == &allowed), "{pool:?}");
        }
    }
}

/// Files under `dir`, each with its content: to see that a run changed nothing there.
fn contents_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// A worker count that is not a whole number (words, a minus sign, spaces, a fraction), or is
/// over 1,024, stops the run with an error naming GITCA_THREADS, before anything is written; it
/// used to be ignored without a word, and the run used every CPU. Empty and 0 count as unset.
#[test]
fn a_gitca_threads_that_is_not_a_count_of_workers_is_refused() {
    let env = Env::from(EXAMPLE, &["revocations.yaml"]);
    env.init(&[]);
    let head = env.head();
    let data = contents_under(&env.data);
    // Each value stops `apply` with `why` before anything is written.
    let refused = |value: &str, why: &str| {
        let o = env
            .command_in(&env.repo, &["apply"])
            .env("GITCA_THREADS", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "GITCA_THREADS={value:?}: {err}");
        assert!(
            err.contains(&format!("GITCA_THREADS={value:?}: {why}")),
            "{err}"
        );
        assert_eq!(env.head(), head);
        assert!(
            contents_under(&env.data) == data,
            "GITCA_THREADS={value:?} wrote state"
        );
        assert_eq!(env.git(&["status", "--porcelain"]), "");
    };
    for value in ["two", "-1", " 2", "1.5", "0x2"] {
        refused(value, "not a number of workers");
    }
    // A count too large to be a machine's: a typo, refused the same way.
    for value in ["1025", "100000"] {
        refused(value, "more workers than gitca starts (at most 1024)");
    }
    for value in ["", "0", "1", "1024"] {
        let o = env
            .command_in(&env.repo, &["plan"])
            .env("GITCA_THREADS", value)
            .output()
            .unwrap();
        // 3: the example holds a request its policy rejects.
        assert_eq!(o.status.code(), Some(3), "GITCA_THREADS={value:?}: {o:?}");
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("gitca plan for commit"));
    }
}
