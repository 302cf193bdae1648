//! Recycled block buffers. A fresh 1 MiB buffer is mapped on its own (see `daemon`), so each one
//! costs 256 page faults and the kernel zeroing every page before the first byte is copied in:
//! on loopback that was a fifth of the daemon's CPU. A buffer whose block left the cache goes back
//! to a free list instead, and the next block is copied into pages already mapped.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

pub struct BufferPool {
    /// Capacity of every pooled buffer: one block.
    buffer_size: usize,
    /// Most buffers kept free; beyond it they are unmapped. The memory budget counts them.
    max_free: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub fn new(buffer_size: usize, max_free: usize) -> Arc<Self> {
        Arc::new(Self { buffer_size, max_free, free: Mutex::new(Vec::new()) })
    }

    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// An empty buffer with room for one block.
    pub fn take(&self) -> Vec<u8> {
        let recycled = crate::sync::lock(&self.free).pop();
        recycled.unwrap_or_else(|| Vec::with_capacity(self.buffer_size))
    }

    /// A buffer for `len` bytes: a recycled one for a whole block, an exact one for less (an
    /// object's short last block: small files cached by the thousand hold only their own size).
    pub fn take_for(&self, len: usize) -> Vec<u8> {
        if len >= self.buffer_size { self.take() } else { Vec::with_capacity(len) }
    }

    /// The filled buffer as bytes that return it to the pool once the last reference is dropped.
    pub fn freeze(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buffer, pool: Arc::downgrade(self) })
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() != self.buffer_size {
            return;
        }
        let mut free = crate::sync::lock(&self.free);
        if free.len() < self.max_free {
            buffer.clear();
            free.push(buffer);
        }
    }

    #[cfg(test)]
    fn free_buffers(&self) -> usize {
        crate::sync::lock(&self.free).len()
    }
}

struct Pooled {
    buffer: Vec<u8>,
    pool: Weak<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_block_lends_its_buffer_to_the_next() {
        let pool = BufferPool::new(4096, 2);
        let mut buffer = pool.take();
        buffer.extend_from_slice(&[7; 4096]);
        let address = buffer.as_ptr();
        let block = pool.freeze(buffer);
        let slice = block.slice(10..20);
        drop(block);
        assert_eq!(pool.free_buffers(), 0, "a slice still holds the buffer");
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        let reused = pool.take();
        assert_eq!(reused.as_ptr(), address, "the same memory comes back");
        assert!(reused.is_empty() && reused.capacity() == 4096);
    }

    #[test]
    fn keeps_at_most_max_free_buffers() {
        let pool = BufferPool::new(64, 2);
        let blocks: Vec<Bytes> = (0..5).map(|_| pool.freeze(pool.take())).collect();
        drop(blocks);
        assert_eq!(pool.free_buffers(), 2);
    }
}
