//! fetchfs: mount an S3 bucket as a local directory tree whose reads become ranged GETs and whose
//! new files become streaming multipart uploads.
//!
//! Layers, top to bottom (see shared/DESIGN.md): `fuse` (the thin kernel adapter) -> `fs` (inodes,
//! directories from key prefixes, open handles) -> `fetch` (readahead, parallel ranged GETs) ->
//! `cache` (the block LRU, the disk tier) and `store` (the `ObjectStore` seam and its S3
//! implementation); `fs` routes files opened for writing to `upload`, which talks to the store;
//! `metrics` counts what each layer does. `cli`/`config` turn arguments into a checked `MountConfig`; `daemon` runs the
//! mount in the foreground or background; `prefetch_command` is the client of a mount's
//! `.fetchfs/prefetch`.

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
pub mod unmount;
pub mod upload;
