//! Renaming a directory: S3 has no directories, so every object under the prefix is copied to the
//! new prefix (in parallel, each copy pinned to its source's ETag) and, once every copy is
//! confirmed, the old keys are deleted (each pinned too). At most `--rename-dir-limit` objects;
//! beyond it the answer is `EXDEV`, and `mv` copies file by file. Not atomic: a failure midway
//! leaves the copies made and deletes nothing more, and the log names what moved.

use std::collections::HashMap;

use futures::StreamExt;

use super::RenameFlags;
use crate::errno::FsError;
use crate::fs::inode::Entry;
use crate::fs::{Fs, Ino};
use crate::object_id::ObjectId;
use crate::store::{ObjectMeta, ObjectStore};
use crate::upload::Source;

/// Copies and deletes sent at once.
const AT_ONCE: usize = 16;

/// Where a directory goes.
pub(super) struct Destination<'a> {
    pub parent: Ino,
    pub name: &'a str,
    /// The key prefix of the directory it goes into.
    pub parent_prefix: &'a str,
}

impl<S: ObjectStore> Fs<S> {
    /// Renames the directory `ino`, whose keys are under `from`, to `to`.
    pub(super) async fn rename_directory(
        &self,
        ino: Ino,
        from: &str,
        to: Destination<'_>,
        flags: RenameFlags,
    ) -> Result<(), FsError> {
        let target = format!("{}{}/", to.parent_prefix, to.name);
        if target == from {
            return Ok(());
        }
        if from.is_empty() || target.starts_with(from) {
            return Err(FsError::InvalidWrite("a directory cannot move into itself".into()));
        }
        if self.handles.writing_under(from) {
            return Err(FsError::Busy);
        }
        self.clear_target(&target, to.parent_prefix, to.name, flags).await?;
        let objects = self.objects_under(from).await?;
        let ours = |o: &ObjectMeta| self.writing.object_written_here(&o.key, &o.etag);
        if !self.options.writes.allow_delete && !objects.iter().all(ours) {
            return Err(FsError::NotPermitted(
                "renaming a directory of objects this mount did not write deletes them: that needs --allow-delete",
            ));
        }
        let copies = self.copy_all(&objects, from, &target).await?;
        self.delete_all(&objects, from, &target).await?;
        for object in &objects {
            self.fetcher.forget_version(&ObjectId { key: object.key.clone(), etag: object.etag.clone() }, object.size);
            if ours(object) {
                self.writing.forget_object(&object.key);
                let copy = &copies[&object.key];
                self.writing.wrote_object(copy.key.clone(), copy.etag.clone());
            }
        }
        self.writing.move_local_dirs(from, &target);
        self.inodes.moved(ino, to.parent, to.name, Entry::Directory { prefix: target.clone() });
        self.inodes.moved_under(from, &target, &copies);
        self.metadata.forget_under(from);
        self.metadata.forget_under(&target);
        if let Some(parent) = parent_prefix(from) {
            self.metadata.forget_listing(parent);
        }
        self.metadata.forget_listing(to.parent_prefix);
        Ok(())
    }

    /// Makes room at `target`: nothing there, or an empty directory made here (which the rename
    /// replaces, as rename(2) replaces an empty directory).
    async fn clear_target(
        &self,
        target: &str,
        parent_prefix: &str,
        name: &str,
        flags: RenameFlags,
    ) -> Result<(), FsError> {
        match self.entry_named(parent_prefix, name).await? {
            None => Ok(()),
            Some(Entry::File(_)) => Err(FsError::NotADirectory),
            Some(Entry::Directory { .. }) if flags.no_replace => Err(FsError::Exists),
            Some(Entry::Directory { .. }) => {
                let empty_here = self.writing.is_local_dir(target)
                    && !self.handles.writing_under(target)
                    && !self.writing.local_dirs_under(target)
                    && self.objects_under(target).await?.is_empty();
                if !empty_here {
                    return Err(FsError::NotEmpty);
                }
                self.writing.remove_local_dir(target);
                Ok(())
            }
        }
    }

    /// Every object under `prefix`, at all depths; more than the limit is `EXDEV`.
    async fn objects_under(&self, prefix: &str) -> Result<Vec<ObjectMeta>, FsError> {
        let limit = self.options.writes.rename_dir_limit;
        let mut objects = Vec::new();
        let mut directories = vec![prefix.to_owned()];
        while let Some(directory) = directories.pop() {
            let mut token = None;
            loop {
                let page = self.within_deadline(async { Ok(self.store.list_page(&directory, token, None).await?) });
                let page = page.await?;
                objects.extend(page.objects);
                directories.extend(page.prefixes);
                if objects.len() > limit {
                    tracing::info!(
                        prefix,
                        "rename: the directory holds more than {limit} objects (--rename-dir-limit): EXDEV, mv copies them"
                    );
                    return Err(FsError::CrossDevice);
                }
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        Ok(objects)
    }

    /// Copies every object to its key under `to`; the copies by old key. A failure leaves the
    /// copies made and is logged with them.
    async fn copy_all(
        &self,
        objects: &[ObjectMeta],
        from: &str,
        to: &str,
    ) -> Result<HashMap<String, ObjectMeta>, FsError> {
        let copying: Vec<_> = objects.iter().map(|object| self.copy_into(object, from, to)).collect();
        let copied: Vec<Result<ObjectMeta, (String, String)>> =
            futures::stream::iter(copying).buffered(AT_ONCE).collect().await;
        let failed: Vec<&(String, String)> = copied.iter().filter_map(|c| c.as_ref().err()).collect();
        if let Some((key, why)) = failed.first() {
            let made: Vec<&str> = copied.iter().filter_map(|c| c.as_ref().ok()).map(|c| c.key.as_str()).collect();
            tracing::warn!(
                from,
                to,
                copied = ?made,
                "rename: copying {key} failed ({why}), and {} of {} copies failed; nothing was deleted",
                failed.len(),
                objects.len()
            );
            return Err(FsError::PartlyRenamed(format!("copying {key} failed: {why}")));
        }
        Ok(copied.into_iter().flatten().map(|copy| (objects_key(&copy.key, from, to), copy)).collect())
    }

    /// Copies `object` from under `from` to the same place under `to`.
    async fn copy_into(&self, object: &ObjectMeta, from: &str, to: &str) -> Result<ObjectMeta, (String, String)> {
        let key = format!("{to}{}", &object.key[from.len()..]);
        let source = Source { key: object.key.clone(), etag: object.etag.clone(), size: object.size };
        match self.uploader.copy_whole(&source, &key).await {
            Ok(etag) => Ok(ObjectMeta { key, etag, ..object.clone() }),
            Err(e) => Err((object.key.clone(), e.to_string())),
        }
    }

    /// Deletes `object`, only if it is still that version.
    async fn delete_pinned<'a>(&self, object: &'a ObjectMeta) -> Result<(), (&'a str, FsError)> {
        let deleting = self.store.delete_object(&object.key, Some(&object.etag));
        self.within_deadline(async { Ok(deleting.await?) }).await.map_err(|e| (object.key.as_str(), e))
    }

    /// Deletes the old keys, each only if it is still the object copied.
    async fn delete_all(&self, objects: &[ObjectMeta], from: &str, to: &str) -> Result<(), FsError> {
        let deleting: Vec<_> = objects.iter().map(|object| self.delete_pinned(object)).collect();
        let deleted: Vec<Result<(), (&str, FsError)>> =
            futures::stream::iter(deleting).buffer_unordered(AT_ONCE).collect().await;
        let left: Vec<&str> = deleted.iter().filter_map(|d| d.as_ref().err()).map(|(key, _)| *key).collect();
        match deleted.into_iter().find_map(Result::err) {
            None => Ok(()),
            Some((key, e)) => {
                tracing::warn!(from, to, still_at_old_names = ?left, "rename: every object was copied, but deleting {key} failed ({e}): both names hold these");
                Err(FsError::PartlyRenamed(format!("deleting {key} failed: {e}")))
            }
        }
    }
}

/// The key under `from` that `copy`, under `to`, was copied from.
fn objects_key(copy: &str, from: &str, to: &str) -> String {
    format!("{from}{}", &copy[to.len()..])
}

/// The prefix of the directory holding the directory `prefix` (`a/b/` is in `a/`).
fn parent_prefix(prefix: &str) -> Option<&str> {
    let inner = prefix.strip_suffix('/')?;
    Some(inner.rfind('/').map_or("", |i| &inner[..=i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_held_by_the_one_above() {
        assert_eq!(parent_prefix("a/b/"), Some("a/"));
        assert_eq!(parent_prefix("a/"), Some(""));
        assert_eq!(parent_prefix(""), None);
    }
}
