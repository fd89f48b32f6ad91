//! I/O adapters behind small traits: git (the desired state), the signer, the state store.

pub mod aws;
pub mod git;
mod git_index;
mod git_pack;
pub mod kms;
pub mod notify;
pub mod pace;
pub mod publish;
pub mod s3_store;
pub mod signer;
pub mod state_store;

pub use git_index::remove_locks_on_termination;
