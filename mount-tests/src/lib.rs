//! Test infrastructure for fetchfs: a local S3-compatible server with latency, bandwidth and fault
//! knobs, deterministic test data, an S3 client for the tests, moto as an independent reference
//! server, and helpers that mount the freshly built `fetchfs` binary.

pub mod ceiling;
pub mod client;
pub mod data;
pub mod metrics;
pub mod moto;
pub mod mount;
pub mod profile;
pub mod sample;
pub mod server;
