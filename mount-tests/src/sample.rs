//! The sample dataset of the README's demo: a few directories, text, small JSON records and one
//! larger binary, generated (not shipped), so the demo needs no network and no AWS account.

use bytes::Bytes;

use crate::server::{Storage, StoredObject};

pub const SAMPLE_BUCKET: &str = "sample";

pub fn seed(storage: &Storage) -> Result<(), String> {
    if !storage.bucket_exists(SAMPLE_BUCKET) {
        storage.create_bucket(SAMPLE_BUCKET).map_err(|e| e.to_string())?;
    }
    let put = |key: &str, data: Bytes| {
        storage.put(SAMPLE_BUCKET, key, StoredObject::new(data, None)).map_err(|e| format!("{key}: {e}"))
    };
    put(
        "README.txt",
        Bytes::from_static(b"This bucket is served by fetchfs's local test server and mounted by fetchfs.\n"),
    )?;
    for i in 0..100 {
        let record = format!("{{\"id\": {i}, \"label\": \"item-{i}\", \"value\": {}}}\n", i * 37 % 101);
        put(&format!("records/{i:03}.json"), Bytes::from(record))?;
    }
    put("images/train/shard-0000.bin", crate::data::content(1, 4 * 1024 * 1024))?;
    put("images/train/shard-0001.bin", crate::data::content(2, 4 * 1024 * 1024))?;
    put("big/random-64MiB.bin", crate::data::content(3, 64 * 1024 * 1024))?;
    Ok(())
}
