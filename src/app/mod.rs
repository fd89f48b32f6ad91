//! Commands: wiring the pure domain to the adapters.

pub mod apply;
pub mod context;
pub mod import;
pub mod index;
pub mod init;
pub mod lease;
pub mod outputs;
pub mod quiet;
pub mod render;
pub mod status;
pub mod verify;

/// Frees a large value (a 100,000-certificate index, a plan) on another thread: freeing takes
/// tens of milliseconds nobody waits for until the process exits.
pub fn free_in_background<T: Send + 'static>(value: T) {
    crate::background::spawn(move || drop(value));
}

/// How a command ended, mapped to the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: nothing to do, or done.
    Clean,
    /// 2: changes pending (plan only).
    Changes,
    /// 3: some requests or revocations were rejected; the rest were planned/applied.
    Rejections,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Clean => 0,
            Exit::Changes => 2,
            Exit::Rejections => 3,
        }
    }
}

/// An error that stops the run: retryable (a re-run may succeed) or one that needs a human.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    NeedsHuman(String),
    #[error("{0} (retryable)")]
    Retryable(String),
}

impl From<String> for RunError {
    fn from(s: String) -> Self {
        RunError::NeedsHuman(s)
    }
}

impl From<crate::adapters::state_store::StoreError> for RunError {
    fn from(e: crate::adapters::state_store::StoreError) -> Self {
        use crate::adapters::state_store::StoreError::*;
        match e {
            Conflict(_) | Retryable(_) => RunError::Retryable(e.to_string()),
            Fatal(_) => RunError::NeedsHuman(e.to_string()),
        }
    }
}

impl From<crate::adapters::signer::SignError> for RunError {
    fn from(e: crate::adapters::signer::SignError) -> Self {
        use crate::adapters::signer::SignError::*;
        match e {
            Retryable(_) => RunError::Retryable(e.to_string()),
            Fatal(_) => RunError::NeedsHuman(e.to_string()),
        }
    }
}
