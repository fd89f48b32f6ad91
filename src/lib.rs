//! gitca: a GitOps certificate authority.
//!
//! `domain` is pure (no I/O): requests, policies, the plan, certificate and CRL profiles.
//! `adapters` talk to the outside: git, the signer, the state store.
//! `app` wires them into the commands; `main.rs` is the thin CLI on top.
//! `background` holds the threads `main` waits for before the process exits.

pub mod adapters;
pub mod app;
pub mod background;
pub mod domain;
