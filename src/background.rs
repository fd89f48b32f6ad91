//! Threads for work no one waits for during a run: freeing a large value, seeding the random
//! generator. `main` waits for them before the process exits: it ends by `_exit`, without the C
//! library's exit handlers, but a panic still runs them, and a thread still inside aws-lc then
//! aborts the process: aws-lc's exit-time destructor takes and clears every thread's
//! random-generator state, and a thread still seeding its own aborts (`SIGABRT` in
//! `CRYPTO_MUTEX_lock_read`). Joined, their work is also known to be done.

use std::sync::Mutex;
use std::thread::JoinHandle;

static RUNNING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Runs `work` on a thread of its own. If no thread can be started, `work` is dropped unrun:
/// what is passed here must be safe to skip (a value it owns is then freed here).
///
/// A run starts a handful (the random warm-up, each index it replaces, its context), so every
/// handle is kept until `finish` joins it, finished or not.
pub fn spawn(work: impl FnOnce() + Send + 'static) {
    if let Ok(thread) = std::thread::Builder::new().spawn(work) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thread);
    }
}

/// Waits for every thread `spawn` started, including any started while it waits. Called by
/// `main` before it returns.
pub fn finish() {
    loop {
        let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
        if running.is_empty() {
            return;
        }
        for thread in running {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn finish_waits_for_every_thread_spawned_even_while_it_waits() {
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let done = done.clone();
            super::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        super::finish();
        assert_eq!(done.load(Ordering::SeqCst), 3);

        // A thread started by one `finish` is waiting for, as dropping a value may start one.
        let outer = done.clone();
        super::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let inner = outer.clone();
            super::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                inner.fetch_add(1, Ordering::SeqCst);
            });
            outer.fetch_add(1, Ordering::SeqCst);
        });
        super::finish();
        assert_eq!(done.load(Ordering::SeqCst), 5);
    }
}
