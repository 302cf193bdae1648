//! `Tiered`: the source store with the shared cache in front of its GETs. Everything else goes to
//! the source as it is. A GET of a version whose size is known (every listing and HEAD passing
//! through says it) is served block by block from the cache while it has them, and from the
//! source from the first block it lacks; the whole blocks the source sends go up to the cache.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;

use super::sealed::Unsealed;
use super::{SharedCache, complete_dropped};
use crate::object_id::ETag;
use crate::store::{BodyStream, ListPage, ObjectMeta, ObjectStore, Replace, StoreError, UploadId, UploadedPart};

/// Blocks of one GET looked up in the cache at once, once it had the first.
const LOOK_AHEAD: usize = 4;
/// Sizes of versions seen in listings and HEADs, kept for the GETs that follow.
const SIZES_KEPT: usize = 100_000;

pub struct Tiered<S, C> {
    source: Arc<S>,
    shared: Option<Arc<SharedCache<C>>>,
    sizes: Mutex<lru::LruCache<(String, ETag), u64>>,
    /// The task that sends up what the fill queue dropped, started with the first GET (on the
    /// runtime).
    completing: std::sync::Once,
}

impl<S, C> Tiered<S, C> {
    pub fn new(source: Arc<S>, shared: Option<Arc<SharedCache<C>>>) -> Self {
        let capacity = std::num::NonZeroUsize::new(SIZES_KEPT).unwrap_or(std::num::NonZeroUsize::MIN);
        Self { source, shared, sizes: Mutex::new(lru::LruCache::new(capacity)), completing: std::sync::Once::new() }
    }

    fn sizes(&self) -> MutexGuard<'_, lru::LruCache<(String, ETag), u64>> {
        crate::sync::lock(&self.sizes)
    }

    fn saw(&self, meta: &ObjectMeta) {
        if self.shared.is_some() {
            self.sizes().put((meta.key.clone(), meta.etag.clone()), meta.size);
        }
    }
}

impl<S: ObjectStore, C: ObjectStore> ObjectStore for Tiered<S, C> {
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListPage, StoreError> {
        let page = self.source.list_page(prefix, token, max_keys).await?;
        page.objects.iter().for_each(|o| self.saw(o));
        Ok(page)
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let meta = self.source.head(key).await?;
        self.saw(&meta);
        Ok(meta)
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &ETag) -> Result<BodyStream, StoreError> {
        let size = self.sizes().get(&(key.to_owned(), etag.clone())).copied();
        let (Some(shared), Some(size)) = (&self.shared, size) else {
            return self.source.get_range(key, range, etag).await;
        };
        self.completing.call_once(|| {
            tokio::spawn(complete_dropped(Arc::clone(&self.source), Arc::downgrade(shared)));
        });
        let range = range.start..range.end.min(size);
        if range.is_empty() {
            return self.source.get_range(key, range, etag).await;
        }
        let version = Version { key: key.to_owned(), etag: etag.clone(), size };
        let serving = Serving {
            source: Arc::clone(&self.source),
            shared: Arc::clone(shared),
            version,
            next: range.start,
            end: range.end,
            from_source: None,
            ahead: VecDeque::new(),
            done: false,
        };
        // The first piece is had before answering, so a source that refuses the GET (the object
        // is another version now) answers here, as a plain GET would.
        match serving.step().await {
            None => Ok(Box::pin(futures::stream::empty())),
            Some((Err(e), _)) => Err(e),
            Some((Ok(first), serving)) => {
                let rest = futures::stream::unfold(serving, Serving::step);
                Ok(Box::pin(futures::stream::once(async move { Ok(first) }).chain(rest)))
            }
        }
    }

    async fn get_whole(&self, key: &str, longest: u64) -> Result<Bytes, StoreError> {
        self.source.get_whole(key, longest).await
    }

    async fn put_object(&self, key: &str, body: Bytes, replace: Replace) -> Result<ETag, StoreError> {
        self.source.put_object(key, body, replace).await
    }

    async fn create_upload(&self, key: &str) -> Result<UploadId, StoreError> {
        self.source.create_upload(key).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        self.source.upload_part(key, upload, number, body).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        from: &str,
        etag: &ETag,
        range: Range<u64>,
    ) -> Result<UploadedPart, StoreError> {
        self.source.upload_part_copy(key, upload, number, from, etag, range).await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: Vec<UploadedPart>,
        replace: Replace,
    ) -> Result<ETag, StoreError> {
        self.source.complete_upload(key, upload, parts, replace).await
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<(), StoreError> {
        self.source.abort_upload(key, upload).await
    }

    async fn delete_object(&self, key: &str, only: Option<&ETag>) -> Result<(), StoreError> {
        self.source.delete_object(key, only).await
    }

    async fn copy_object(&self, from: &str, etag: &ETag, to: &str) -> Result<ETag, StoreError> {
        self.source.copy_object(from, etag, to).await
    }
}

/// The version a GET is of.
struct Version {
    key: String,
    etag: ETag,
    size: u64,
}

/// A GET served from the cache block by block, then from the source from the first block the
/// cache lacks.
struct Serving<S, C> {
    source: Arc<S>,
    shared: Arc<SharedCache<C>>,
    version: Version,
    next: u64,
    end: u64,
    from_source: Option<(BodyStream, Filling)>,
    /// Lookups of the blocks after the one being served, started once the cache had one.
    ahead: VecDeque<(u64, tokio::task::JoinHandle<Option<Bytes>>)>,
    /// After an error the stream has nothing more to give.
    done: bool,
}

impl<S, C> Drop for Serving<S, C> {
    fn drop(&mut self) {
        self.ahead.iter().for_each(|(_, lookup)| lookup.abort());
    }
}

impl<S: ObjectStore, C: ObjectStore> Serving<S, C> {
    /// The next piece of the range, and the state after it.
    async fn step(mut self) -> Option<(Result<Bytes, StoreError>, Self)> {
        if self.done {
            return None;
        }
        if let Some((body, filling)) = &mut self.from_source {
            return match body.next().await {
                Some(Ok(chunk)) => {
                    filling.take(&chunk, self.next, &self.shared, &self.version);
                    self.next += chunk.len() as u64;
                    if self.next >= self.end {
                        // Its reader need not ask past the last byte it wants.
                        filling.finish(&self.shared, &self.version);
                    }
                    Some((Ok(chunk), self))
                }
                Some(Err(e)) => {
                    self.done = true;
                    Some((Err(e), self))
                }
                None => {
                    filling.finish(&self.shared, &self.version);
                    None
                }
            };
        }
        if self.next >= self.end {
            return None;
        }
        let block = self.shared.block();
        let index = self.next / block;
        let found = match self.ahead.pop_front() {
            Some((ahead, lookup)) if ahead == index => lookup.await.ok().flatten(),
            _ => {
                let Version { key, etag, size } = &self.version;
                self.shared.get(key, etag.as_str(), *size, index).await
            }
        };
        if found.is_some() {
            self.look_ahead(index);
        } else {
            self.ahead.drain(..).for_each(|(_, lookup)| lookup.abort());
        }
        let Version { key, etag, .. } = &self.version;
        if let Some(bytes) = found {
            let start = index * block;
            let until = self.end.min(start + bytes.len() as u64);
            let piece = bytes.slice((self.next - start) as usize..(until - start) as usize);
            self.next = until;
            return Some((Ok(piece), self));
        }
        match self.source.get_range(key, self.next..self.end, etag).await {
            Ok(body) => {
                self.from_source = Some((body, Filling::at(self.next, block)));
                Box::pin(self.step()).await
            }
            Err(e) => {
                self.done = true;
                Some((Err(e), self))
            }
        }
    }
}

impl<S, C: ObjectStore> Serving<S, C> {
    /// Starts the lookups of the blocks after `index` in the range, up to LOOK_AHEAD of them.
    fn look_ahead(&mut self, index: u64) {
        let block = self.shared.block();
        let mut next = self.ahead.back().map_or(index + 1, |(i, _)| i + 1);
        while self.ahead.len() < LOOK_AHEAD && next * block < self.end {
            let (shared, key, etag, size) =
                (Arc::clone(&self.shared), self.version.key.clone(), self.version.etag.clone(), self.version.size);
            let lookup = tokio::spawn(async move { shared.get(&key, etag.as_str(), size, next).await });
            self.ahead.push_back((next, lookup));
            next += 1;
        }
    }
}

/// The blocks passing by in a body from the source, gathered to go up to the cache: whole ones
/// as they complete, and the partial blocks at either end as pieces.
struct Filling {
    block: u64,
    /// Where the block being gathered starts (a multiple of `block`).
    start: u64,
    gathering: Option<Gathering>,
}

/// What becomes of the block at `Filling::start`.
enum Gathering {
    /// Its bytes so far, copied as they pass.
    Into(Unsealed),
    /// The fill queue was full when it began: it was dropped then, and this many of its bytes
    /// went by without a copy made of them for nothing.
    Passing(usize),
}

impl Gathering {
    fn gathered(&self) -> usize {
        match self {
            Gathering::Into(block) => block.gathered(),
            Gathering::Passing(passed) => *passed,
        }
    }
}

impl Filling {
    /// For a body starting at `offset`: blocks from the first that starts in it.
    fn at(offset: u64, block: u64) -> Self {
        Self { block, start: offset.div_ceil(block) * block, gathering: None }
    }

    /// `chunk`, which starts at `offset` of the object, passed by.
    fn take<C: ObjectStore>(&mut self, chunk: &Bytes, offset: u64, shared: &SharedCache<C>, version: &Version) {
        let skip = self.start.saturating_sub(offset).min(chunk.len() as u64) as usize;
        if skip > 0 {
            let index = offset / self.block;
            let at = offset - index * self.block;
            shared.fill_piece(&version.key, version.etag.as_str(), version.size, index, at, chunk.slice(..skip));
        }
        let mut data = &chunk[skip..];
        while !data.is_empty() && self.start < version.size {
            let block_len = (self.block.min(version.size - self.start)) as usize;
            let index = self.start / self.block;
            let gathering = self.gathering.get_or_insert_with(|| {
                if shared.has_room() {
                    Gathering::Into(shared.unsealed())
                } else {
                    shared.drop_fill(&version.key, version.etag.as_str(), version.size, index);
                    Gathering::Passing(0)
                }
            });
            let take = (block_len - gathering.gathered()).min(data.len());
            match gathering {
                Gathering::Into(block) => block.extend_from_slice(&data[..take]),
                Gathering::Passing(passed) => *passed += take,
            }
            data = &data[take..];
            if gathering.gathered() == block_len {
                if let Some(Gathering::Into(block)) = self.gathering.take() {
                    shared.fill(&version.key, version.etag.as_str(), version.size, index, block);
                }
                self.start += block_len as u64;
            }
        }
    }

    /// The body ended: a block it ended inside goes to the pieces (unless it was dropped).
    fn finish<C: ObjectStore>(&mut self, shared: &SharedCache<C>, version: &Version) {
        if let Some(Gathering::Into(gathered)) = self.gathering.take().filter(|gathering| gathering.gathered() > 0) {
            let piece = Bytes::copy_from_slice(gathered.bytes());
            shared.fill_piece(&version.key, version.etag.as_str(), version.size, self.start / self.block, 0, piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::shared::sealed::{self, Check};
    use crate::cache::shared::{CpuPressure, SharedCache, SharedCacheConfig};
    use crate::metrics::SharedCacheMetrics;
    use crate::store::memory::MemoryStore;

    const BLOCK: u64 = 1000;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    fn node(
        source: &Arc<MemoryStore>,
        cache: &Arc<MemoryStore>,
        check: Check,
    ) -> (Tiered<MemoryStore, MemoryStore>, SharedCacheMetrics) {
        node_with_queue(source, cache, check, 1 << 20)
    }

    fn node_with_queue(
        source: &Arc<MemoryStore>,
        cache: &Arc<MemoryStore>,
        check: Check,
        queue_bytes: u64,
    ) -> (Tiered<MemoryStore, MemoryStore>, SharedCacheMetrics) {
        let metrics = SharedCacheMetrics::default();
        // Fills here must not wait on how busy the machine running the tests is.
        let pressure = CpuPressure::ignored();
        let config = SharedCacheConfig {
            prefix: "c/".into(),
            scope: "test\nsrc".into(),
            block: BLOCK,
            check,
            queue_bytes,
            pressure,
        };
        let shared =
            SharedCache::start(Arc::clone(cache), Arc::clone(cache), config, metrics.clone()).expect("started");
        (Tiered::new(Arc::clone(source), Some(shared)), metrics)
    }

    async fn read(store: &impl ObjectStore, key: &str, range: Range<u64>) -> Vec<u8> {
        let meta = store.head(key).await.expect("head");
        let wanted = (range.end.min(meta.size) - range.start) as usize;
        let mut body = store.get_range(key, range, &meta.etag).await.expect("get");
        let mut out = Vec::new();
        // As the fetch layer does: no poll past the last byte wanted.
        while out.len() < wanted
            && let Some(chunk) = body.next().await
        {
            out.extend_from_slice(&chunk.expect("chunk"));
        }
        out
    }

    /// Waits until `bytes` went up: generously, since fills wait for quiet readers and for a
    /// busy machine's CPUs, and only the outcome is asserted, never how soon it came.
    async fn settled(metrics: &SharedCacheMetrics, bytes: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if metrics.written_bytes.get() >= bytes {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{} of {bytes} bytes went up", metrics.written_bytes.get());
    }

    #[tokio::test]
    async fn a_second_node_reads_what_the_first_fetched_from_the_cache_alone() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let data = content(3500);
        source.put("obj", Bytes::from(data.clone()));
        let (first, metrics) = node(&source, &cache, Check::Digest);
        assert_eq!(read(&first, "obj", 0..3500).await, data);
        settled(&metrics, 3500).await;
        assert_eq!(cache.object_count(), 4, "three whole blocks and the last, shorter one");

        let (second, metrics) = node(&source, &cache, Check::Digest);
        let gets = source.counts().gets;
        assert_eq!(read(&second, "obj", 0..3500).await, data);
        assert_eq!(read(&second, "obj", 1500..2200).await, data[1500..2200]);
        assert_eq!(source.counts().gets, gets, "nothing from the source");
        assert_eq!(metrics.hits.get(), 6);
    }

    #[tokio::test]
    async fn only_whole_blocks_go_up_and_a_read_goes_to_the_source_from_the_first_block_missing() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let data = content(3500);
        source.put("obj", Bytes::from(data.clone()));
        let (first, metrics) = node(&source, &cache, Check::Digest);
        assert_eq!(read(&first, "obj", 500..2500).await, data[500..2500]);
        settled(&metrics, 1000).await;
        assert_eq!(cache.object_count(), 1, "only block 1 passed by whole");
        let (second, _) = node(&source, &cache, Check::Digest);
        let gets = source.counts().gets;
        assert_eq!(read(&second, "obj", 1000..3500).await, data[1000..3500]);
        assert_eq!(source.counts().gets, gets + 1, "block 1 from the cache, the rest in one GET");
    }

    #[tokio::test]
    async fn a_block_fetched_in_pieces_goes_up_once_they_cover_it() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let data = content(2500);
        source.put("obj", Bytes::from(data.clone()));
        let (first, metrics) = node(&source, &cache, Check::Digest);
        // A stream's first read on its own, then the rest of its block and the next as a span.
        assert_eq!(read(&first, "obj", 0..300).await, data[..300]);
        assert_eq!(read(&first, "obj", 300..2000).await, data[300..2000]);
        settled(&metrics, 2000).await;
        let (second, _) = node(&source, &cache, Check::Digest);
        let gets = source.counts().gets;
        assert_eq!(read(&second, "obj", 0..2000).await, data[..2000]);
        assert_eq!(source.counts().gets, gets, "blocks 0 and 1 both from the cache");
    }

    #[tokio::test]
    async fn a_planted_or_unkeyed_block_is_never_served() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let data = content(800);
        source.put("obj", Bytes::from(data.clone()));
        let (first, metrics) = node(&source, &cache, Check::Digest);
        assert_eq!(read(&first, "obj", 0..800).await, data);
        settled(&metrics, 800).await;
        // A node holding the key refuses what a node without it sealed.
        let (keyed, metrics) = node(&source, &cache, Check::keyed(b"cluster secret"));
        assert_eq!(read(&keyed, "obj", 0..800).await, data);
        assert_eq!(metrics.integrity_failures.get(), 1);
        // Bytes changed in the cache bucket by hand.
        let (key, sealed) = cache.objects().into_iter().next().expect("a cached block");
        let mut planted = sealed.to_vec();
        *planted.last_mut().unwrap() ^= 0xff;
        cache.put(&key, Bytes::from(planted));
        let (plain, metrics) = node(&source, &cache, Check::Digest);
        assert_eq!(read(&plain, "obj", 0..800).await, data);
        assert_eq!(metrics.integrity_failures.get(), 1);
    }

    #[tokio::test]
    async fn keyed_nodes_share_blocks_and_refuse_a_flipped_byte_or_an_oversized_object() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let data = content(800);
        source.put("obj", Bytes::from(data.clone()));
        let secret: &[u8] = b"cluster secret";
        let (first, metrics) = node(&source, &cache, Check::keyed(secret));
        assert_eq!(read(&first, "obj", 0..800).await, data);
        settled(&metrics, 800).await;
        // A second node with the same key is served from the cache alone.
        let (second, metrics) = node(&source, &cache, Check::keyed(secret));
        let gets = source.counts().gets;
        assert_eq!(read(&second, "obj", 0..800).await, data);
        assert_eq!((source.counts().gets, metrics.hits.get(), metrics.integrity_failures.get()), (gets, 1, 0));
        // One byte flipped in a block sealed with the right key.
        let (key, sealed) = cache.objects().into_iter().next().expect("a cached block");
        let mut flipped = sealed.to_vec();
        flipped[sealed::HEADER_LEN + 17] ^= 0x01;
        cache.put(&key, Bytes::from(flipped));
        let (third, metrics) = node(&source, &cache, Check::keyed(secret));
        assert_eq!(read(&third, "obj", 0..800).await, data, "exact bytes, from the source");
        assert_eq!((metrics.hits.get(), metrics.integrity_failures.get()), (0, 1));
        // A planted object far longer than a block and its seal is refused by its length alone.
        let mut oversized = sealed.to_vec();
        oversized.extend(std::iter::repeat_n(0u8, 1 << 20));
        cache.put(&key, Bytes::from(oversized));
        let (fourth, metrics) = node(&source, &cache, Check::keyed(secret));
        assert_eq!(read(&fourth, "obj", 0..800).await, data);
        assert_eq!((metrics.hits.get(), metrics.integrity_failures.get()), (0, 1));
    }

    #[tokio::test]
    async fn a_node_ahead_of_the_others_asks_the_cache_of_few_files_until_one_is_there() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let names: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
        for (i, name) in names.iter().enumerate() {
            source.put(name, Bytes::from(content(500 + i)));
        }
        let read_all = async |node: &Tiered<MemoryStore, MemoryStore>, names: &[String]| {
            for name in names {
                let len = 500 + names_index(name);
                assert_eq!(read(node, name, 0..len as u64).await, content(len), "{name}");
            }
        };
        // Another node read the last hundred files first.
        let (other, metrics) = node(&source, &cache, Check::Digest);
        read_all(&other, &names[200..]).await;
        settled(&metrics, (200..300).map(|i| 500 + i as u64).sum()).await;

        let (first, metrics) = node(&source, &cache, Check::Digest);
        let lookups = cache.counts().gets;
        read_all(&first, &names[..200]).await;
        let asked = cache.counts().gets - lookups;
        assert!(asked < 80, "after 32 misses in a row, about one file in 8 is looked up: {asked} of 200");
        assert!(asked >= 32, "the first 32 are: {asked}");
        assert_eq!(metrics.hits.get(), 0);

        let gets = source.counts().gets;
        read_all(&first, &names[200..]).await;
        let from_source = source.counts().gets - gets;
        assert!(from_source < 40, "once a sampled file is found, every file is looked up: {from_source} of 100");
    }

    fn names_index(name: &str) -> usize {
        name[1..].parse().expect("a numbered name")
    }

    #[tokio::test]
    async fn blocks_a_full_queue_dropped_go_up_once_the_readers_are_quiet() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        let data = content(20 * BLOCK as usize);
        source.put("obj", Bytes::from(data.clone()));
        // A queue of one block and a slow cache: most of the 20 blocks find it full.
        cache.set_put_delay(std::time::Duration::from_millis(50));
        let (first, metrics) = node_with_queue(&source, &cache, Check::Digest, BLOCK);
        assert_eq!(read(&first, "obj", 0..data.len() as u64).await, data);
        let dropped = metrics.fills_dropped.get();
        assert!(dropped > 0, "the queue dropped blocks");
        let gets = source.counts().gets;
        settled(&metrics, 20 * (BLOCK + sealed::HEADER_LEN as u64)).await;
        assert_eq!(metrics.fills_completed.get(), dropped, "each dropped block went up later");
        assert_eq!(source.counts().gets - gets, dropped, "fetched again from the source, once each");

        let (second, _) = node(&source, &cache, Check::Digest);
        let gets = source.counts().gets;
        assert_eq!(read(&second, "obj", 0..data.len() as u64).await, data);
        assert_eq!(source.counts().gets, gets, "the second node reads nothing from the source");
    }

    #[tokio::test]
    async fn a_block_that_begins_while_the_queue_is_full_is_dropped_then_and_never_gathered() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        // A queue of one block and a cache that takes its time: the queue is full once the filling
        // thread has as many fills under way as it sends at once.
        cache.set_put_delay(std::time::Duration::from_secs(5));
        let (node, metrics) = node_with_queue(&source, &cache, Check::Digest, BLOCK);
        let shared = node.shared.clone().expect("a shared cache");
        let version = Version { key: "obj".into(), etag: ETag::new("\"e\""), size: 40 * BLOCK };
        let block = Bytes::from(content(BLOCK as usize));
        let mut filling = Filling::at(0, BLOCK);
        let mut offset = 0;
        while shared.has_room() && offset < 30 * BLOCK {
            filling.take(&block, offset, &shared, &version);
            offset += BLOCK;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!shared.has_room(), "the queue filled up");
        let dropped = metrics.fills_dropped.get();
        filling.take(&block.slice(..BLOCK as usize / 2), offset, &shared, &version);
        assert!(
            matches!(filling.gathering, Some(Gathering::Passing(passed)) if passed as u64 == BLOCK / 2),
            "half a block went by without a copy"
        );
        assert_eq!(metrics.fills_dropped.get(), dropped + 1, "dropped as it began");
        filling.take(&block.slice(BLOCK as usize / 2..), offset + BLOCK / 2, &shared, &version);
        assert!(filling.gathering.is_none() && filling.start == offset + BLOCK, "on to the next block");
        assert_eq!(metrics.fills_dropped.get(), dropped + 1, "dropped once");
        assert_eq!(shared.lock_dropped().back().map(|d| d.index), Some(offset / BLOCK), "remembered, to go up later");
    }

    #[tokio::test]
    async fn a_version_replaced_at_the_source_is_a_new_key_in_the_cache() {
        let (source, cache) = (Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()));
        source.put("obj", Bytes::from(content(500)));
        let (first, metrics) = node(&source, &cache, Check::Digest);
        read(&first, "obj", 0..500).await;
        settled(&metrics, 500).await;
        source.put("obj", Bytes::from_static(b"new bytes"));
        let (second, _) = node(&source, &cache, Check::Digest);
        assert_eq!(read(&second, "obj", 0..9).await, b"new bytes");
    }
}
