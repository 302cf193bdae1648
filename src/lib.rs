//! fetchfs: mount an S3 bucket as a local directory tree whose reads become ranged GETs and whose
//! new files become streaming multipart uploads. `fetchfs` (`main.rs`) is a thin binary over this
//! library; the tests and the benchmark use its parts.
//!
#![doc = include_str!("../ARCHITECTURE.md")]

#[cfg(test)]
mod architecture_doc;
pub mod bench;
pub(crate) mod cache;
pub mod cli;
pub mod config;
pub mod daemon;
pub(crate) mod errno;
pub(crate) mod fetch;
pub(crate) mod fs;
pub(crate) mod fuse;
pub(crate) mod in_flight;
pub(crate) mod memory_budget;
pub(crate) mod memory_target;
pub(crate) mod metrics;
pub mod object_id;
pub mod panics;
pub mod prefetch_command;
pub mod store;
pub(crate) mod sync;
pub(crate) mod unmount;
pub(crate) mod upload;
