//! Pure domain logic: no file system, no network, no clock (time is a parameter).

pub mod config;
pub mod crl;
pub mod csr;
pub mod duration;
pub mod events;
pub mod finding;
pub mod fixed_key;
pub mod incremental;
pub mod names;
pub mod plan;
pub mod policy;
pub mod profile;
pub mod request;
pub mod revocation;
pub mod serial;
pub mod serverless;
pub mod serverless_layout;
pub mod signed;
pub mod state;
