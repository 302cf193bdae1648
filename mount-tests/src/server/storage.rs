//! Buckets and objects of the test server, with S3's identity rules (ETags, LastModified) and,
//! optionally, write-through persistence to a directory so a restarted server keeps its data.
//!
//! Data is always served from memory (`Bytes` slices, no copies on GET); the directory, when
//! configured, is only read at startup and written on every change.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest, Md5};

/// One stored object: its bytes and the identity S3 reports for it.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub data: Bytes,
    /// The ETag value without quotes: the MD5 of the body, or for multipart uploads the MD5 of the
    /// parts' MD5s followed by `-<part count>`, as S3 computes it.
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: Option<String>,
}

impl StoredObject {
    pub fn new(data: Bytes, content_type: Option<String>) -> Self {
        let etag = hex::encode(Md5::digest(&data));
        Self::with_etag(data, etag, content_type)
    }

    pub fn with_etag(data: Bytes, etag: String, content_type: Option<String>) -> Self {
        // S3 reports LastModified with one-second precision in HTTP headers; keep whole seconds so
        // HEAD and LIST agree.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let last_modified = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        Self { data, etag, last_modified, content_type }
    }
}

/// Multipart ETag: MD5 over the concatenated binary MD5s of the parts, then `-N`.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut hasher = Md5::new();
    for md5 in part_md5s {
        hasher.update(md5);
    }
    format!("{}-{}", hex::encode(hasher.finalize()), part_md5s.len())
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket already exists")]
    BucketAlreadyExists,
    #[error("bucket is not empty")]
    BucketNotEmpty,
    #[error("persisting to disk failed: {0}")]
    Io(#[from] io::Error),
}

struct Bucket {
    created: SystemTime,
    objects: BTreeMap<String, StoredObject>,
}

/// All buckets of one server.
pub struct Storage {
    buckets: Mutex<HashMap<String, Bucket>>,
    dir: Option<PathBuf>,
}

impl Storage {
    pub fn in_memory() -> Self {
        Self { buckets: Mutex::new(HashMap::new()), dir: None }
    }

    /// Loads whatever an earlier server left in `dir`, and persists every change there.
    pub fn in_directory(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut buckets = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let created = entry.metadata()?.modified()?;
            let mut objects = BTreeMap::new();
            for file in std::fs::read_dir(entry.path())? {
                let path = file?.path();
                if path.extension().is_some_and(|e| e == "meta") {
                    continue;
                }
                if let Some((key, object)) = disk::load(&path)? {
                    objects.insert(key, object);
                }
            }
            buckets.insert(name, Bucket { created, objects });
        }
        Ok(Self { buckets: Mutex::new(buckets), dir: Some(dir.to_owned()) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        // A panic while holding the lock cannot leave the maps half-updated (every change is one
        // insert or remove), so a poisoned lock is still consistent.
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn create_bucket(&self, name: &str) -> Result<(), StorageError> {
        let mut buckets = self.lock();
        if buckets.contains_key(name) {
            return Err(StorageError::BucketAlreadyExists);
        }
        if let Some(dir) = &self.dir {
            std::fs::create_dir_all(dir.join(name))?;
        }
        buckets.insert(name.to_owned(), Bucket { created: SystemTime::now(), objects: BTreeMap::new() });
        Ok(())
    }

    pub fn delete_bucket(&self, name: &str) -> Result<(), StorageError> {
        let mut buckets = self.lock();
        let bucket = buckets.get(name).ok_or(StorageError::NoSuchBucket)?;
        if !bucket.objects.is_empty() {
            return Err(StorageError::BucketNotEmpty);
        }
        if let Some(dir) = &self.dir {
            std::fs::remove_dir_all(dir.join(name))?;
        }
        buckets.remove(name);
        Ok(())
    }

    pub fn bucket_exists(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Bucket names with their creation times, sorted by name as S3 lists them.
    pub fn buckets(&self) -> Vec<(String, SystemTime)> {
        let mut list: Vec<_> = self.lock().iter().map(|(n, b)| (n.clone(), b.created)).collect();
        list.sort();
        list
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>, StorageError> {
        let buckets = self.lock();
        let bucket = buckets.get(bucket).ok_or(StorageError::NoSuchBucket)?;
        Ok(bucket.objects.get(key).cloned())
    }

    pub fn put(&self, bucket: &str, key: &str, object: StoredObject) -> Result<(), StorageError> {
        let mut buckets = self.lock();
        let entry = buckets.get_mut(bucket).ok_or(StorageError::NoSuchBucket)?;
        if let Some(dir) = &self.dir {
            disk::store(&dir.join(bucket), key, &object)?;
        }
        entry.objects.insert(key.to_owned(), object);
        Ok(())
    }

    /// Removes a key; deleting a missing key succeeds, as in S3.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        let mut buckets = self.lock();
        let entry = buckets.get_mut(bucket).ok_or(StorageError::NoSuchBucket)?;
        if entry.objects.remove(key).is_some()
            && let Some(dir) = &self.dir
        {
            disk::remove(&dir.join(bucket), key)?;
        }
        Ok(())
    }

    /// Up to `limit` (key, object) pairs with keys starting with `prefix` and greater than
    /// `after`, in key order. The data is shared, not copied.
    pub fn scan(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        mut visit: impl FnMut(&str, &StoredObject) -> bool,
    ) -> Result<(), StorageError> {
        use std::ops::Bound;
        let buckets = self.lock();
        let entry = buckets.get(bucket).ok_or(StorageError::NoSuchBucket)?;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        for (key, object) in entry.objects.range((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) || !visit(key, object) {
                break;
            }
        }
        Ok(())
    }
}

/// The on-disk form: `<bucket dir>/<hex of key>` holds the bytes, `<hex of key>.meta` the ETag,
/// LastModified (Unix seconds) and content type, one per line. Hex keeps any key a valid file name.
mod disk {
    use super::*;

    fn data_path(bucket_dir: &Path, key: &str) -> PathBuf {
        bucket_dir.join(hex::encode(key.as_bytes()))
    }

    pub fn store(bucket_dir: &Path, key: &str, object: &StoredObject) -> io::Result<()> {
        let data = data_path(bucket_dir, key);
        let secs = object.last_modified.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let meta = format!("{}\n{}\n{}\n", object.etag, secs, object.content_type.as_deref().unwrap_or(""));
        std::fs::write(&data, &object.data)?;
        std::fs::write(data.with_extension("meta"), meta)
    }

    pub fn remove(bucket_dir: &Path, key: &str) -> io::Result<()> {
        let data = data_path(bucket_dir, key);
        std::fs::remove_file(data.with_extension("meta"))?;
        std::fs::remove_file(data)
    }

    /// Reads one object back; files that are not ours (or half-written) are ignored.
    pub fn load(data: &Path) -> io::Result<Option<(String, StoredObject)>> {
        let Some(key) = data
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| hex::decode(n).ok())
            .and_then(|k| String::from_utf8(k).ok())
        else {
            return Ok(None);
        };
        let Ok(meta) = std::fs::read_to_string(data.with_extension("meta")) else { return Ok(None) };
        let mut lines = meta.lines();
        let (Some(etag), Some(secs)) = (lines.next(), lines.next().and_then(|s| s.parse::<u64>().ok())) else {
            return Ok(None);
        };
        let content_type = lines.next().filter(|t| !t.is_empty()).map(str::to_owned);
        let object = StoredObject {
            data: Bytes::from(std::fs::read(data)?),
            etag: etag.to_owned(),
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
            content_type,
        };
        Ok(Some((key, object)))
    }
}
