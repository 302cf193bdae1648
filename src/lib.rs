//! fetchfs: mount an S3 bucket as a local directory tree whose reads become ranged GETs and whose
//! new files become streaming multipart uploads. `fetchfs` (`main.rs`) is a thin binary over this
//! library; the tests and the benchmark use its parts.
//!
#![doc = include_str!("../ARCHITECTURE.md")]

#[cfg(test)]
mod architecture_doc;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod errno;
pub mod fetch;
pub mod fs;
pub mod fuse;
pub mod in_flight;
pub mod metrics;
pub mod object_id;
pub mod panics;
pub mod prefetch_command;
pub mod store;
pub mod sync;
pub mod unmount;
pub mod upload;
