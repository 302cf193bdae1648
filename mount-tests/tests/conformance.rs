//! One conformance suite, run against our test server and against moto: proof that the two agree
//! on everything fetchfs relies on. Where moto departs from AWS's documented behaviour, the check
//! follows AWS and says so.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use md5::{Digest, Md5};
use mount_tests::client::{Retries, s3_client, upload};
use mount_tests::data;
use mount_tests::server::{Credentials, ServerConfig, TestServer};

struct Target {
    client: Client,
    bucket: String,
    /// Keeps our server alive for the test; moto's is shared by the process.
    _server: Option<TestServer>,
}

fn unique_bucket() -> String {
    format!("conf-{:016x}", fastrand::u64(..))
}

async fn target(client: Client, server: Option<TestServer>) -> Target {
    let bucket = unique_bucket();
    client.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    Target { client, bucket, _server: server }
}

async fn ours() -> Target {
    let server = TestServer::start(ServerConfig::default()).expect("start test server");
    let client = s3_client(&server.endpoint_url(), &Credentials::default(), Retries::Standard);
    target(client, Some(server)).await
}

async fn moto() -> Target {
    let moto = tokio::task::spawn_blocking(mount_tests::moto::shared).await.expect("join").expect("moto server");
    let client = s3_client(&moto.endpoint_url, &Credentials::default(), Retries::Standard);
    target(client, None).await
}

/// Runs each check as a test against both servers: `ours::check` and `moto::check`.
macro_rules! against_both {
    ($($check:ident),* $(,)?) => {
        mod ours {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(&super::ours().await).await })*
        }
        mod moto {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() { super::$check(&super::moto().await).await })*
        }
    };
}

against_both!(
    put_get_head_agree_on_identity,
    every_range_form,
    conditional_get_and_head,
    listing_with_prefix_and_delimiter,
    listing_pages_and_start_after,
    odd_keys_round_trip,
    multipart_upload_etag_and_bytes,
    copy_and_delete,
    missing_keys_and_buckets,
    overwrite_changes_etag,
);

fn http_status<E: std::error::Error + Send + Sync + 'static, T>(
    result: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> u16 {
    match result {
        Ok(_) => 200,
        Err(SdkError::ServiceError(e)) => e.raw().status().as_u16(),
        Err(other) => panic!("expected an HTTP answer, got {}", aws_sdk_s3::error::DisplayErrorContext(other)),
    }
}

fn quoted_md5(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

async fn put(t: &Target, key: &str, data: Bytes) -> String {
    let out = t.client.put_object().bucket(&t.bucket).key(key).body(ByteStream::from(data)).send().await.expect("put");
    out.e_tag.expect("PutObject returns an ETag")
}

async fn get_bytes(t: &Target, key: &str, range: Option<&str>) -> (Bytes, Option<String>) {
    let out = t.client.get_object().bucket(&t.bucket).key(key).set_range(range.map(str::to_owned)).send().await;
    let out = out.unwrap_or_else(|e| panic!("GET {key} {range:?}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    let content_range = out.content_range.clone();
    (out.body.collect().await.expect("body").into_bytes(), content_range)
}

async fn put_get_head_agree_on_identity(t: &Target) {
    let data = data::content(1, 100_000);
    let etag = put(t, "obj", data.clone()).await;
    assert_eq!(etag, quoted_md5(&data), "single-part ETag is the body's MD5");

    let head = t.client.head_object().bucket(&t.bucket).key("obj").send().await.expect("head");
    assert_eq!(head.content_length, Some(100_000));
    assert_eq!(head.e_tag.as_deref(), Some(etag.as_str()));
    let modified = head.last_modified.expect("LastModified").secs();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - modified).abs() < 600, "LastModified {modified} is near now {now}");

    let got = t.client.get_object().bucket(&t.bucket).key("obj").send().await.expect("get");
    assert_eq!(got.e_tag.as_deref(), Some(etag.as_str()));
    assert_eq!(got.content_length, Some(100_000));
    assert_eq!(got.body.collect().await.unwrap().into_bytes(), data);
}

async fn every_range_form(t: &Target) {
    let data = data::content(2, 1000);
    put(t, "r", data.clone()).await;
    let cases: [(&str, std::ops::Range<usize>); 5] = [
        ("bytes=10-19", 10..20),
        ("bytes=990-", 990..1000),
        ("bytes=-5", 995..1000),
        ("bytes=995-2000", 995..1000), // past the end: clamped
        ("bytes=0-0", 0..1),
    ];
    for (header, expected) in cases {
        let (body, content_range) = get_bytes(t, "r", Some(header)).await;
        assert_eq!(body, data.slice(expected.clone()), "{header}");
        let want = format!("bytes {}-{}/1000", expected.start, expected.end - 1);
        assert_eq!(content_range.as_deref(), Some(want.as_str()), "{header}");
    }
    let beyond = t.client.get_object().bucket(&t.bucket).key("r").range("bytes=1000-1010").send().await;
    assert_eq!(http_status(beyond), 416, "a range starting at the end is unsatisfiable");
}

async fn conditional_get_and_head(t: &Target) {
    let etag = put(t, "c", Bytes::from_static(b"conditional")).await;
    let other = "\"0123456789abcdef0123456789abcdef\"";
    let get = |if_match: Option<&str>, if_none_match: Option<&str>| {
        t.client
            .get_object()
            .bucket(&t.bucket)
            .key("c")
            .set_if_match(if_match.map(str::to_owned))
            .set_if_none_match(if_none_match.map(str::to_owned))
            .send()
    };
    assert_eq!(http_status(get(Some(&etag), None).await), 200);
    assert_eq!(http_status(get(Some(other), None).await), 412);
    assert_eq!(http_status(get(None, Some(&etag)).await), 304);
    assert_eq!(http_status(get(None, Some(other)).await), 200);

    let head = |if_match: Option<&str>, if_none_match: Option<&str>| {
        t.client
            .head_object()
            .bucket(&t.bucket)
            .key("c")
            .set_if_match(if_match.map(str::to_owned))
            .set_if_none_match(if_none_match.map(str::to_owned))
            .send()
    };
    assert_eq!(http_status(head(Some(&etag), None).await), 200);
    assert_eq!(http_status(head(Some(other), None).await), 412);
    assert_eq!(http_status(head(None, Some(&etag)).await), 304);
}

async fn list_all(t: &Target, prefix: &str, delimiter: Option<&str>) -> (Vec<String>, Vec<String>) {
    let out = t
        .client
        .list_objects_v2()
        .bucket(&t.bucket)
        .prefix(prefix)
        .set_delimiter(delimiter.map(str::to_owned))
        .send()
        .await
        .expect("list");
    for object in out.contents() {
        assert!(object.size.is_some(), "every entry has a size");
        assert!(object.e_tag.is_some(), "every entry has an ETag");
        assert!(object.last_modified.is_some(), "every entry has LastModified");
    }
    let keys = out.contents().iter().filter_map(|o| o.key.clone()).collect();
    let prefixes = out.common_prefixes().iter().filter_map(|p| p.prefix.clone()).collect();
    (keys, prefixes)
}

async fn listing_with_prefix_and_delimiter(t: &Target) {
    for key in ["a/1", "a/2", "a/b/3", "c", "d/", "e/f/g"] {
        put(t, key, Bytes::from(key.to_owned())).await;
    }
    let (keys, prefixes) = list_all(t, "", Some("/")).await;
    assert_eq!(keys, ["c"]);
    assert_eq!(prefixes, ["a/", "d/", "e/"]);
    let (keys, prefixes) = list_all(t, "a/", Some("/")).await;
    assert_eq!(keys, ["a/1", "a/2"]);
    assert_eq!(prefixes, ["a/b/"]);
    let (keys, prefixes) = list_all(t, "d/", Some("/")).await;
    assert_eq!(keys, ["d/"], "a directory marker lists as a key under its own prefix");
    assert!(prefixes.is_empty());
    let (keys, _) = list_all(t, "", None).await;
    assert_eq!(keys, ["a/1", "a/2", "a/b/3", "c", "d/", "e/f/g"]);

    let etag = put(t, "sized", Bytes::from_static(b"12345")).await;
    let out = t.client.list_objects_v2().bucket(&t.bucket).prefix("sized").send().await.unwrap();
    let entry = &out.contents()[0];
    assert_eq!(entry.size, Some(5));
    assert_eq!(entry.e_tag.as_deref(), Some(etag.as_str()), "listing and PUT agree on the ETag");
}

async fn listing_pages_and_start_after(t: &Target) {
    for i in 0..25 {
        put(t, &format!("k{i:02}"), Bytes::from_static(b"x")).await;
    }
    let mut token = None;
    let mut pages = Vec::new();
    loop {
        let out = t
            .client
            .list_objects_v2()
            .bucket(&t.bucket)
            .max_keys(10)
            .set_continuation_token(token.take())
            .send()
            .await
            .expect("list page");
        let keys: Vec<String> = out.contents().iter().filter_map(|o| o.key.clone()).collect();
        assert_eq!(out.key_count, Some(keys.len() as i32));
        pages.push(keys);
        if out.is_truncated != Some(true) {
            assert!(out.next_continuation_token.is_none());
            break;
        }
        token = out.next_continuation_token;
        assert!(token.is_some(), "a truncated page carries a continuation token");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let all: Vec<String> = pages.concat();
    assert_eq!(all, (0..25).map(|i| format!("k{i:02}")).collect::<Vec<_>>());

    let out = t.client.list_objects_v2().bucket(&t.bucket).start_after("k19").send().await.unwrap();
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key.as_deref()).collect();
    assert_eq!(keys, ["k20", "k21", "k22", "k23", "k24"]);

    for i in 0..5 {
        put(t, &format!("p{i}/a"), Bytes::from_static(b"x")).await;
        put(t, &format!("p{i}/b"), Bytes::from_static(b"x")).await;
    }
    let mut token = None;
    let mut prefixes = Vec::new();
    loop {
        let out = t
            .client
            .list_objects_v2()
            .bucket(&t.bucket)
            .prefix("p")
            .delimiter("/")
            .max_keys(2)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap();
        prefixes.push(out.common_prefixes().iter().filter_map(|p| p.prefix.clone()).collect::<Vec<_>>());
        if out.is_truncated != Some(true) {
            break;
        }
        token = out.next_continuation_token;
    }
    let flat: Vec<String> = prefixes.concat();
    assert_eq!(flat, ["p0/", "p1/", "p2/", "p3/", "p4/"], "common prefixes page without repeats");
    assert!(prefixes.iter().all(|p| p.len() <= 2));
}

async fn odd_keys_round_trip(t: &Target) {
    let keys = ["with space.txt", "ünïcødé/文件.txt", "plus+sign", "percent%25literal", "100%", "dir/", "a=b&c"];
    for (i, key) in keys.iter().enumerate() {
        put(t, key, data::content(i as u64, 10 * i)).await;
    }
    let (mut listed, _) = list_all(t, "", None).await;
    listed.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "keys list back exactly as written");
    for (i, key) in keys.iter().enumerate() {
        let (body, _) = get_bytes(t, key, None).await;
        assert_eq!(body, data::content(i as u64, 10 * i), "{key}");
    }
}

async fn multipart_upload_etag_and_bytes(t: &Target) {
    const PART: usize = 5 * 1024 * 1024; // S3's minimum for all parts but the last
    let data = data::content(9, 2 * PART + 1024 * 1024);
    let etag = upload(&t.client, &t.bucket, "mp", data.clone(), PART).await.expect("multipart upload");
    let mut md5s = Vec::new();
    for chunk in data.chunks(PART) {
        md5s.extend_from_slice(&Md5::digest(chunk));
    }
    let expected = format!("\"{}-3\"", hex::encode(Md5::digest(&md5s)));
    assert_eq!(etag, expected, "multipart ETag is the MD5 of the part MD5s, then -N");
    let (body, _) = get_bytes(t, "mp", None).await;
    assert!(body == data, "multipart body reassembles the parts in order");
    let (across, _) = get_bytes(t, "mp", Some(&format!("bytes={}-{}", PART - 10, PART + 9))).await;
    assert_eq!(across, data.slice(PART - 10..PART + 10));
}

async fn copy_and_delete(t: &Target) {
    let data = data::content(4, 4096);
    let etag = put(t, "src", data.clone()).await;
    t.client.copy_object().bucket(&t.bucket).key("dst").copy_source(format!("{}/src", t.bucket)).send().await.unwrap();
    let (body, _) = get_bytes(t, "dst", None).await;
    assert_eq!(body, data);
    let head = t.client.head_object().bucket(&t.bucket).key("dst").send().await.unwrap();
    assert_eq!(head.e_tag.as_deref(), Some(etag.as_str()), "a copy of a single-part object keeps its ETag");

    t.client.delete_object().bucket(&t.bucket).key("dst").send().await.unwrap();
    let gone = t.client.get_object().bucket(&t.bucket).key("dst").send().await;
    assert_eq!(http_status(gone), 404);
    t.client
        .delete_object()
        .bucket(&t.bucket)
        .key("never-existed")
        .send()
        .await
        .expect("deleting a missing key succeeds");

    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let ids = ["src", "missing"].map(|k| ObjectIdentifier::builder().key(k).build().unwrap());
    let out = t
        .client
        .delete_objects()
        .bucket(&t.bucket)
        .delete(Delete::builder().set_objects(Some(ids.to_vec())).build().unwrap())
        .send()
        .await
        .unwrap();
    let mut deleted: Vec<&str> = out.deleted().iter().filter_map(|d| d.key.as_deref()).collect();
    deleted.sort();
    assert_eq!(deleted, ["missing", "src"]);
    let (keys, _) = list_all(t, "", None).await;
    assert!(keys.is_empty(), "left: {keys:?}");
}

async fn missing_keys_and_buckets(t: &Target) {
    let get = t.client.get_object().bucket(&t.bucket).key("nope").send().await;
    match get {
        Err(SdkError::ServiceError(e)) => {
            assert_eq!(e.raw().status().as_u16(), 404);
            assert!(e.err().is_no_such_key(), "GET of a missing key is NoSuchKey");
        }
        other => panic!("expected NoSuchKey, got {other:?}"),
    }
    assert_eq!(http_status(t.client.head_object().bucket(&t.bucket).key("nope").send().await), 404);
    let missing_bucket = format!("{}-missing", t.bucket);
    assert_eq!(http_status(t.client.head_bucket().bucket(&missing_bucket).send().await), 404);
    let get = t.client.get_object().bucket(&missing_bucket).key("k").send().await;
    match get {
        Err(SdkError::ServiceError(e)) => {
            assert_eq!(e.raw().status().as_u16(), 404);
            assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(e.err()), Some("NoSuchBucket"));
        }
        other => panic!("expected NoSuchBucket, got {other:?}"),
    }
    // A "directory" that exists only as a prefix of other keys is not an object.
    put(t, "dir/file", Bytes::from_static(b"x")).await;
    assert_eq!(http_status(t.client.head_object().bucket(&t.bucket).key("dir").send().await), 404);
    assert_eq!(http_status(t.client.head_object().bucket(&t.bucket).key("dir/").send().await), 404);
}

async fn overwrite_changes_etag(t: &Target) {
    let first = put(t, "v", Bytes::from_static(b"version one")).await;
    let second = put(t, "v", Bytes::from_static(b"version two!")).await;
    assert_ne!(first, second);
    let stale = t.client.get_object().bucket(&t.bucket).key("v").if_match(&first).range("bytes=0-3").send().await;
    assert_eq!(http_status(stale), 412, "a read pinned to the old ETag fails, never mixes versions");
    let (body, _) = get_bytes(t, "v", None).await;
    assert_eq!(body, Bytes::from_static(b"version two!"));
}
