//! The write path against the in-memory store: the object is exactly what was written, parts go
//! up while the writer goes on, failures abort, and the memory for parts is bounded.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::store::memory::MemoryStore;

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn uploader(store: &Arc<MemoryStore>, config: UploadConfig) -> Arc<Uploader<MemoryStore>> {
    Uploader::new(Arc::clone(store), config, Arc::default(), None)
}

fn small_parts() -> UploadConfig {
    UploadConfig { first_part_size: 64 * 1024, concurrency: 3, budget: 512 * 1024, ..UploadConfig::default() }
}

/// Writes `data` in 64 KiB writes until one fails (a failure may show at a write or only at the end).
async fn write_until_refused(upload: &mut Upload<MemoryStore>, data: &[u8]) -> Result<(), WriteError> {
    for (i, chunk) in data.chunks(65_536).enumerate() {
        upload.write(i as u64 * 65_536, chunk).await?;
    }
    Ok(())
}

async fn stored(store: &MemoryStore, key: &str) -> Bytes {
    use futures::StreamExt;
    let meta = store.head(key).await.expect("the object exists");
    let mut body = store.get_range(key, 0..meta.size, &meta.etag).await.expect("get");
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    Bytes::from(out)
}

#[tokio::test]
async fn a_small_file_goes_up_in_one_put() {
    let store = Arc::new(MemoryStore::new());
    let mut upload = uploader(&store, small_parts()).start("small".into(), Replace::Never);
    upload.write(0, b"hello ").await.unwrap();
    upload.write(6, b"world").await.unwrap();
    upload.finish().await.unwrap();
    assert_eq!(stored(&store, "small").await, Bytes::from_static(b"hello world"));
    let counts = store.counts();
    assert_eq!((counts.puts, counts.parts, counts.completes), (1, 0, 0));
}

#[tokio::test]
async fn an_empty_file_is_an_empty_object() {
    let store = Arc::new(MemoryStore::new());
    let mut upload = uploader(&store, small_parts()).start("empty".into(), Replace::Never);
    upload.finish().await.unwrap();
    assert_eq!(stored(&store, "empty").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_its_parts_in_order_whatever_the_write_sizes() {
    let store = Arc::new(MemoryStore::new());
    let data = content(1_000_000);
    let mut upload = uploader(&store, small_parts()).start("large".into(), Replace::Never);
    let mut offset = 0;
    for size in [1, 4095, 70_000, 131_072, 3].iter().cycle() {
        let end = (offset + size).min(data.len());
        upload.write(offset as u64, &data[offset..end]).await.unwrap();
        offset = end;
        if offset == data.len() {
            break;
        }
    }
    upload.finish().await.unwrap();
    assert!(stored(&store, "large").await == data);
    let counts = store.counts();
    assert_eq!(counts.parts, 1_000_000u64.div_ceil(64 * 1024));
    assert_eq!((counts.puts, counts.completes, store.uploads_in_progress()), (0, 1, 0));
}

#[tokio::test]
async fn a_write_not_at_the_end_is_refused_and_changes_nothing() {
    let store = Arc::new(MemoryStore::new());
    let mut upload = uploader(&store, small_parts()).start("f".into(), Replace::Never);
    upload.write(0, b"abc").await.unwrap();
    assert_eq!(upload.write(10, b"x").await, Err(WriteError::NotAtEnd { offset: 10, end: 3 }));
    assert_eq!(upload.write(1, b"x").await, Err(WriteError::NotAtEnd { offset: 1, end: 3 }));
    upload.write(3, b"d").await.unwrap();
    upload.finish().await.unwrap();
    assert_eq!(stored(&store, "f").await, Bytes::from_static(b"abcd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_aborts_the_upload_and_no_object_appears() {
    let store = Arc::new(MemoryStore::new());
    store.fail_next_parts(1);
    let data = content(500_000);
    let mut upload = uploader(&store, small_parts()).start("broken".into(), Replace::Never);
    // Writes may fail as soon as the failure is known, or only at the end.
    let wrote = write_until_refused(&mut upload, &data).await;
    let finished = upload.finish().await;
    assert!(wrote.is_err() || finished.is_err(), "the failure is reported");
    assert!(matches!(finished, Err(WriteError::Failed(_))), "{finished:?}");
    assert_eq!(store.head("broken").await.map(|m| m.size), Err(StoreError::NotFound));
    assert_eq!((store.uploads_in_progress(), store.counts().aborts), (0, 1), "aborted, nothing left");
}

#[tokio::test]
async fn a_new_file_never_replaces_an_object_created_meanwhile() {
    let store = Arc::new(MemoryStore::new());
    let mut upload = uploader(&store, small_parts()).start("race".into(), Replace::Never);
    upload.write(0, b"mine").await.unwrap();
    store.put("race", Bytes::from_static(b"theirs"));
    assert_eq!(upload.finish().await, Err(WriteError::Failed(StoreError::PreconditionFailed)));
    assert_eq!(stored(&store, "race").await, Bytes::from_static(b"theirs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_wait_for_memory_rather_than_fail() {
    // Room for two parts in the whole mount: two files written at once, each wanting up to four
    // parts in flight, take turns and both finish.
    let store = Arc::new(MemoryStore::new());
    store.set_part_delay(std::time::Duration::from_millis(5));
    let config =
        UploadConfig { first_part_size: 64 * 1024, concurrency: 4, budget: 128 * 1024, ..UploadConfig::default() };
    let uploader = uploader(&store, config);
    let data = Arc::new(content(600_000));
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|key| {
            let (uploader, data) = (Arc::clone(&uploader), Arc::clone(&data));
            tokio::spawn(async move {
                let mut upload = uploader.start(key.into(), Replace::Never);
                for (i, chunk) in data.chunks(10_000).enumerate() {
                    upload.write(i as u64 * 10_000, chunk).await.unwrap();
                }
                upload.finish().await.unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(stored(&store, "a").await == *data && stored(&store, "b").await == *data);
    assert_eq!(uploader.memory.available_permits(), 128, "all the memory came back");
}

#[test]
fn parts_grow_so_large_objects_fit_in_ten_thousand() {
    let config =
        UploadConfig { first_part_size: 8 * MIB, concurrency: 8, budget: 128 * MIB, ..UploadConfig::default() };
    assert_eq!(config.part_size(1), 8 * MIB);
    assert_eq!(config.part_size(1000), 8 * MIB);
    assert_eq!(config.part_size(1001), 16 * MIB);
    assert_eq!(config.part_size(2001), 32 * MIB);
    assert_eq!(config.part_size(3001), 64 * MIB, "at most half the budget");
    assert_eq!(config.part_size(10_000), 64 * MIB);
    assert_eq!(config.largest_object(), (8 + 16 + 32 + 7 * 64) * 1000 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_past_the_largest_object_is_too_large() {
    // 1 KiB parts that cannot grow (the budget holds two): 10,000 KiB at most.
    let store = Arc::new(MemoryStore::new());
    let config = UploadConfig { first_part_size: 1024, concurrency: 4, budget: 2048, ..UploadConfig::default() };
    assert_eq!(config.largest_object(), 10_000 * 1024);
    let mut upload = uploader(&store, config).start("huge".into(), Replace::Never);
    let chunk = vec![5u8; 1024 * 1024];
    for i in 0..9 {
        upload.write(i * chunk.len() as u64, &chunk).await.unwrap();
    }
    let past = upload.write(9 * chunk.len() as u64, &chunk).await;
    assert_eq!(past, Err(WriteError::TooLarge { limit: 10_000 * 1024 }));
    upload.cancel(Stage::Writing).await;
    assert_eq!(store.head("huge").await.map(|m| m.size), Err(StoreError::NotFound));
    assert_eq!(store.uploads_in_progress(), 0, "the parts sent were aborted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_each_holding_part_of_a_part_never_wait_on_each_other() {
    // Room for two parts; ten files written round-robin each hold part of a part, and no part
    // fills to give memory back: the writer goes on by keeping parts on disk.
    let store = Arc::new(MemoryStore::new());
    let config =
        UploadConfig { first_part_size: 64 * 1024, concurrency: 2, budget: 128 * 1024, ..UploadConfig::default() };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let uploader = Uploader::new(Arc::clone(&store), config, Arc::clone(&metrics), None);
    let data = content(200_000);
    let mut uploads: Vec<_> = (0..10).map(|i| uploader.start(format!("f{i}"), Replace::Never)).collect();
    let write_all = async {
        for (n, chunk) in data.chunks(16 * 1024).enumerate() {
            for upload in &mut uploads {
                upload.write((n * 16 * 1024) as u64, chunk).await.unwrap();
            }
        }
        for upload in &mut uploads {
            upload.finish().await.unwrap();
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), write_all).await.expect("no writer waits forever");
    for i in 0..10 {
        assert!(stored(&store, &format!("f{i}")).await == data, "f{i} is exact");
    }
    assert!(metrics.upload_parts_spilled.get() > 0, "parts went to disk");
    assert_eq!(uploader.memory.available_permits(), 128, "all the memory came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_fails_the_upload_within_the_deadline() {
    let store = Arc::new(MemoryStore::new());
    store.set_part_delay(std::time::Duration::from_secs(3600));
    let deadline = std::time::Duration::from_millis(200);
    let config = UploadConfig {
        first_part_size: 64 * 1024,
        concurrency: 2,
        budget: 512 * 1024,
        deadline,
        ..UploadConfig::default()
    };
    let mut upload = uploader(&store, config).start("stalled".into(), Replace::Never);
    let started = std::time::Instant::now();
    let data = content(300_000);
    let wrote = write_until_refused(&mut upload, &data).await;
    let finished = upload.finish().await;
    let failed = [wrote.err(), finished.err()].into_iter().flatten().next();
    assert!(matches!(failed, Some(WriteError::TimedOut { .. })), "{failed:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(store.uploads_in_progress(), 0, "aborted");
}

#[tokio::test]
async fn a_file_written_again_after_an_empty_close_replaces_only_that_empty_object() {
    let store = Arc::new(MemoryStore::new());
    let mut upload = uploader(&store, small_parts()).start("f".into(), Replace::Never);
    upload.finish().await.unwrap();
    upload.write(0, b"first").await.unwrap();
    upload.finish().await.unwrap();
    assert_eq!(stored(&store, "f").await, Bytes::from_static(b"first"));

    let mut upload = uploader(&store, small_parts()).start("g".into(), Replace::Never);
    upload.finish().await.unwrap();
    store.put("g", Bytes::from_static(b"OTHER-CLIENT-DATA"));
    upload.write(0, b"mine").await.unwrap();
    assert_eq!(upload.finish().await, Err(WriteError::Failed(StoreError::PreconditionFailed)));
    assert_eq!(stored(&store, "g").await, Bytes::from_static(b"OTHER-CLIENT-DATA"));
}

/// Appending: the object becomes its old bytes then the new ones, by a server-side copy when it is
/// a part's worth, else by sending its bytes again; and never over a change made meanwhile.
mod appending {
    use super::*;
    use crate::store::ObjectStore;

    async fn base(store: &MemoryStore, key: &str, data: &[u8]) -> Source {
        let etag = store.put(key, Bytes::copy_from_slice(data));
        let meta = store.head(key).await.expect("head");
        Source { key: key.into(), etag, size: meta.size }
    }

    #[tokio::test]
    async fn a_small_object_is_fetched_and_sent_again_with_the_new_bytes() {
        let store = Arc::new(MemoryStore::new());
        let old = base(&store, "log", b"line 1\n").await;
        let mut upload = uploader(&store, small_parts()).start_appending(old);
        assert_eq!(upload.written(), 7);
        upload.write(7, b"line 2\n").await.unwrap();
        upload.write(14, b"line 3\n").await.unwrap();
        upload.finish().await.unwrap();
        let counts = store.counts();
        assert_eq!((counts.gets, counts.puts, counts.part_copies), (1, 1, 0));
        assert_eq!(stored(&store, "log").await, Bytes::from_static(b"line 1\nline 2\nline 3\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_object_is_copied_on_the_server_and_only_the_new_bytes_sent() {
        let store = Arc::new(MemoryStore::new());
        let old_bytes = content(11 * MIB as usize);
        let old = base(&store, "big", &old_bytes).await;
        let config = UploadConfig { largest_single_copy: 10 * MIB, ..small_parts() };
        let mut upload = uploader(&store, config).start_appending(old);
        let new_bytes = content(200_000);
        let end = old_bytes.len() as u64;
        for (i, chunk) in new_bytes.chunks(65_536).enumerate() {
            upload.write(end + i as u64 * 65_536, chunk).await.unwrap();
        }
        upload.finish().await.unwrap();
        let counts = store.counts();
        assert_eq!((counts.gets, counts.part_copies), (0, 2), "two copied parts of 5.5 MiB, nothing fetched");
        assert_eq!(counts.bytes_sent, 0);
        let mut expected = old_bytes.clone();
        expected.extend_from_slice(&new_bytes);
        assert!(stored(&store, "big").await == expected, "old bytes then new");
    }

    #[tokio::test]
    async fn opened_to_append_and_closed_unwritten_the_object_is_untouched() {
        let store = Arc::new(MemoryStore::new());
        let old = base(&store, "log", b"kept").await;
        let etag = old.etag.clone();
        let mut upload = uploader(&store, small_parts()).start_appending(old);
        assert_eq!(upload.finish().await.unwrap(), etag);
        let counts = store.counts();
        assert_eq!((counts.gets, counts.puts, counts.parts, counts.completes), (0, 0, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_changed_meanwhile_fails_the_append_and_keeps_the_other_write() {
        for size in [100, 6 * MIB as usize] {
            let store = Arc::new(MemoryStore::new());
            let old = base(&store, "log", &content(size)).await;
            let config = UploadConfig { largest_single_copy: 10 * MIB, ..small_parts() };
            let mut upload = uploader(&store, config).start_appending(old);
            upload.write(size as u64, b"mine").await.unwrap();
            store.put("log", Bytes::from_static(b"theirs"));
            assert_eq!(upload.finish().await, Err(WriteError::Changed), "{size} bytes");
            assert_eq!(stored(&store, "log").await, Bytes::from_static(b"theirs"));
            assert_eq!(store.uploads_in_progress(), 0, "nothing left behind");
        }
    }

    #[tokio::test]
    async fn a_write_anywhere_but_the_end_is_refused() {
        let store = Arc::new(MemoryStore::new());
        let old = base(&store, "log", b"0123456789").await;
        let mut upload = uploader(&store, small_parts()).start_appending(old);
        assert_eq!(upload.write(0, b"x").await, Err(WriteError::NotAtEnd { offset: 0, end: 10 }));
        assert_eq!(store.counts().gets, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_single_copy_limit_is_copied_in_parts_pinned_to_its_etag() {
    let store = Arc::new(MemoryStore::new());
    let data = content(25 * MIB as usize);
    let etag = store.put("from", Bytes::from(data.clone()));
    let config = UploadConfig { largest_single_copy: 10 * MIB, ..small_parts() };
    let copier = uploader(&store, config);
    let source = Source { key: "from".into(), etag: etag.clone(), size: data.len() as u64 };
    copier.copy_whole(&source, "to").await.unwrap();
    assert!(stored(&store, "to").await == data);
    let counts = store.counts();
    assert_eq!((counts.copies, counts.part_copies, counts.completes), (0, 3, 1));

    store.put("from", Bytes::from_static(b"changed"));
    assert_eq!(copier.copy_whole(&source, "again").await, Err(WriteError::Failed(StoreError::PreconditionFailed)));
    assert_eq!(store.uploads_in_progress(), 0, "the failed copy was aborted");
    assert!(store.head("again").await.is_err());
}
