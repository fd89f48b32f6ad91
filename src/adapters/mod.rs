//! I/O adapters behind small traits: git (the desired state), the signer, the state store.

pub mod git;
pub mod signer;
pub mod state_store;
