//! One conformance suite for fetchfs's `ObjectStore` seam, run against the in-memory store (used
//! by the fast unit tests) and against the S3 store talking to the test server: proof that the
//! fake behaves like the real thing on everything the layers above rely on.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fetchfs::object_id::ETag;
use fetchfs::store::memory::MemoryStore;
use fetchfs::store::s3::S3Store;
use fetchfs::store::{ObjectStore, StoreError};
use futures::StreamExt;
use md5::{Digest, Md5};
use mount_tests::data;
use mount_tests::server::{ServerConfig, StoredObject, TestServer};

/// A store plus a way to write objects into whatever is behind it.
trait Fixture {
    type Store: ObjectStore;
    fn store(&self) -> &Self::Store;
    fn put(&self, key: &str, data: Bytes) -> ETag;
}

struct Memory(Arc<MemoryStore>);

impl Fixture for Memory {
    type Store = MemoryStore;
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    fn put(&self, key: &str, data: Bytes) -> ETag {
        self.0.put(key, data)
    }
}

struct S3 {
    store: Arc<S3Store>,
    server: TestServer,
}

const BUCKET: &str = "store-conformance";

impl Fixture for S3 {
    type Store = S3Store;
    fn store(&self) -> &S3Store {
        &self.store
    }
    fn put(&self, key: &str, data: Bytes) -> ETag {
        let etag = format!("\"{}\"", hex::encode(Md5::digest(&data)));
        self.server.storage().put(BUCKET, key, StoredObject::new(data, None)).unwrap();
        ETag::new(etag)
    }
}

async fn s3() -> S3 {
    let server = TestServer::start(ServerConfig::default()).unwrap();
    server.storage().create_bucket(BUCKET).unwrap();
    let keys = server.credentials().cloned().unwrap();
    let store = mount_tests::client::fetchfs_store(&server.endpoint_url(), &keys, BUCKET).await.unwrap();
    S3 { store, server }
}

fn memory() -> Memory {
    Memory(Arc::new(MemoryStore::new()))
}

macro_rules! against_both {
    ($($check:ident),* $(,)?) => {
        mod memory_store {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(&super::memory()).await })*
        }
        mod s3_store {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(&super::s3().await).await })*
        }
    };
}

against_both!(
    head_reports_size_and_etag,
    ranges_stream_exact_bytes,
    stale_etag_is_precondition_failed,
    missing_keys_are_not_found,
    listings_group_and_page
);

async fn get(f: &impl Fixture, key: &str, range: std::ops::Range<u64>, etag: &ETag) -> Result<Bytes, StoreError> {
    let mut body = f.store().get_range(key, range, etag).await?;
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

async fn head_reports_size_and_etag(f: &impl Fixture) {
    let etag = f.put("a/b.bin", data::content(1, 12345));
    let meta = f.store().head("a/b.bin").await.unwrap();
    assert_eq!((meta.key.as_str(), meta.size, &meta.etag), ("a/b.bin", 12345, &etag));
}

async fn ranges_stream_exact_bytes(f: &impl Fixture) {
    let content = data::content(2, 3 * 1024 * 1024 + 17);
    let etag = f.put("obj", content.clone());
    let len = content.len() as u64;
    for range in [0..1, 0..len, 1000..2_000_000, len - 17..len] {
        let got = get(f, "obj", range.clone(), &etag).await.unwrap();
        assert!(got == content.slice(range.start as usize..range.end as usize), "{range:?}");
    }
    let clamped = get(f, "obj", len - 10..len + 100, &etag).await.unwrap();
    assert!(clamped == content.slice(len as usize - 10..), "a range past the end is clamped");
}

async fn stale_etag_is_precondition_failed(f: &impl Fixture) {
    let old = f.put("v", Bytes::from_static(b"one"));
    let new = f.put("v", Bytes::from_static(b"two!"));
    assert_ne!(old, new);
    assert_eq!(get(f, "v", 0..3, &old).await, Err(StoreError::PreconditionFailed));
    assert_eq!(get(f, "v", 0..4, &new).await.unwrap(), Bytes::from_static(b"two!"));
}

async fn missing_keys_are_not_found(f: &impl Fixture) {
    assert_eq!(f.store().head("nope").await, Err(StoreError::NotFound));
    let etag = ETag::new("\"00000000000000000000000000000000\"");
    assert_eq!(get(f, "nope", 0..1, &etag).await, Err(StoreError::NotFound));
}

async fn listings_group_and_page(f: &impl Fixture) {
    for key in ["d/a", "d/b", "d/sub/c", "d/sub2/", "d/z", "e"] {
        f.put(key, Bytes::from_static(b"x"));
    }
    let page = f.store().list_page("d/", None, None).await.unwrap();
    let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["d/a", "d/b", "d/z"]);
    assert_eq!(page.prefixes, ["d/sub/", "d/sub2/"]);
    assert!(page.next.is_none());
    let marker = f.store().list_page("d/sub2/", None, None).await.unwrap();
    assert_eq!(marker.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["d/sub2/"]);

    let mut token = None;
    let mut seen = Vec::new();
    loop {
        let page = f.store().list_page("d/", token, Some(2)).await.unwrap();
        assert!(page.objects.len() + page.prefixes.len() <= 2);
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        seen.extend(page.prefixes);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["d/a", "d/b", "d/sub/", "d/sub2/", "d/z"], "pages cover every entry once");
}
