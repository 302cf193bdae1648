//! A part being filled: in memory reserved from the mount's budget as its bytes arrive, or, when
//! the budget is taken by other files' unfinished parts, in an unnamed file on disk. A writer
//! thus always makes progress: memory frees only as parts go up, and a part goes up only once it
//! is full, so files each holding part of a part (many logs open, files written round-robin)
//! would otherwise wait on each other forever.

use std::io::SeekFrom;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::KIB;

pub(super) enum Body {
    /// Bytes in memory, and the budget reserved for them (in KiB, up to the part's size).
    Memory { bytes: BytesMut, reserved: OwnedSemaphorePermit },
    /// Bytes in an unnamed file (`O_TMPFILE`): nobody can reach or replace it by a name.
    Spilled { file: tokio::fs::File },
}

pub(super) struct Part {
    pub(super) limit: u64,
    pub(super) len: u64,
    pub(super) body: Body,
}

impl Part {
    pub(super) fn new(limit: u64, reserved: OwnedSemaphorePermit) -> Self {
        Self { limit, len: 0, body: Body::Memory { bytes: BytesMut::new(), reserved } }
    }

    pub(super) fn room(&self) -> u64 {
        self.limit - self.len
    }

    /// KiB of budget still to reserve before `more` bytes can be held in memory (0 once spilled).
    pub(super) fn missing_kib(&self, more: u64) -> u32 {
        match &self.body {
            Body::Memory { reserved, .. } => {
                let needed = (self.len + more).div_ceil(KIB);
                needed.saturating_sub(reserved.num_permits() as u64).min(u64::from(u32::MAX)) as u32
            }
            Body::Spilled { .. } => 0,
        }
    }

    /// KiB of budget this part may still reserve: up to its whole size.
    pub(super) fn unreserved_kib(&self) -> u32 {
        match &self.body {
            Body::Memory { reserved, .. } => {
                self.limit.div_ceil(KIB).saturating_sub(reserved.num_permits() as u64).min(u64::from(u32::MAX)) as u32
            }
            Body::Spilled { .. } => 0,
        }
    }

    pub(super) fn reserve(&mut self, more: OwnedSemaphorePermit) {
        if let Body::Memory { reserved, .. } = &mut self.body {
            reserved.merge(more);
        }
    }

    pub(super) fn is_spilled(&self) -> bool {
        matches!(self.body, Body::Spilled { .. })
    }

    /// Appends `data`; in memory, the room was reserved first.
    pub(super) async fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.body {
            Body::Memory { bytes, .. } => {
                if bytes.capacity() == 0 {
                    // Reserving a whole part up front would make a 1-byte file cost one.
                    bytes.reserve(data.len());
                }
                bytes.extend_from_slice(data);
            }
            Body::Spilled { file } => file.write_all(data).await?,
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Moves the bytes to an unnamed file in `dir`, giving their memory back to the budget.
    pub(super) async fn spill(&mut self, dir: &Path) -> std::io::Result<()> {
        let Body::Memory { bytes, .. } = &self.body else { return Ok(()) };
        let dir = dir.to_owned();
        let file =
            tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir)).await.map_err(std::io::Error::other)??;
        let mut file = tokio::fs::File::from_std(file);
        file.write_all(bytes).await?;
        self.body = Body::Spilled { file };
        Ok(())
    }

    /// The part's bytes, and the memory reserved for them if it was in memory.
    pub(super) async fn into_bytes(self) -> std::io::Result<(Bytes, Option<OwnedSemaphorePermit>)> {
        match self.body {
            Body::Memory { bytes, reserved } => Ok((bytes.freeze(), Some(reserved))),
            Body::Spilled { mut file } => {
                file.flush().await?;
                file.seek(SeekFrom::Start(0)).await?;
                let mut bytes = Vec::with_capacity(self.len as usize);
                file.read_to_end(&mut bytes).await?;
                Ok((Bytes::from(bytes), None))
            }
        }
    }
}
