//! The write path: files created here, or replaced whole, become uploads. The `close` by the
//! process that opened the file, its `fsync`, or the release of its last descriptor completes it;
//! a close by a child that inherited the descriptor does not, until the opener has closed it. Deletes, and directories that live
//! here until a file is written under them.

use std::sync::Arc;
use std::time::SystemTime;

use super::handles::Handle;
use super::listing::Known;
use super::writing::Writer;
use super::{Access, Attr, AttrChange, Entry, Fs, Ino, Kind, Opened, UnfinishedUpload, names};
use crate::errno::FsError;
use crate::object_id::ETag;
use crate::store::{ObjectMeta, ObjectStore, Replace, StoreError};
use crate::upload::{Source, WriteError};

/// A file completed: the object exists.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Finished {
    /// The inode of the version it replaced, which the kernel must stop taking for the name (the
    /// new version has an inode of its own).
    pub replaced: Option<Ino>,
}

/// Why nothing is made, moved or deleted at `.fetchfs` at the root, or in it.
pub(super) const RESERVED: FsError =
    FsError::NotPermitted("`.fetchfs` at the mount's root is its control directory: nothing moves into or out of it");

impl<S: ObjectStore> Fs<S> {
    fn check_writable(&self) -> Result<(), FsError> {
        if self.options.writes.read_only { Err(FsError::ReadOnly) } else { Ok(()) }
    }

    /// The key prefix of `parent`, if `name` may be made there.
    pub(super) fn prefix_for_new(&self, parent: Ino, name: &str) -> Result<String, FsError> {
        self.check_writable()?;
        if self.is_reserved(parent, name) {
            return Err(RESERVED);
        }
        let prefix = self.dir_prefix(parent)?;
        // S3 keys are at most 1024 bytes; a directory's prefix adds its `/`.
        if names::is_too_long(name) || prefix.len() + name.len() + 1 > names::LONGEST_KEY {
            return Err(FsError::NameTooLong);
        }
        if !names::is_valid_name(name) {
            return Err(FsError::NotPermitted("the name cannot be a key (empty, '.' or '..')"));
        }
        Ok(prefix)
    }

    /// Creates `name` in `parent` and opens it for writing; the object appears once complete.
    /// `opener` is the process creating it.
    pub async fn create(&self, parent: Ino, name: &str, opener: Option<u32>) -> Result<(Attr, u64), FsError> {
        let prefix = self.prefix_for_new(parent, name)?;
        if self.handles.writer_at(&prefix, name).is_some() {
            return Err(FsError::Busy);
        }
        // With the directory's listing at hand, the lookups of the next names created in it are
        // answered here, not by a round trip each under the kernel's directory lock.
        if self.metadata.listing(&prefix).is_none()
            && let Err(e) = self.listing(parent, &prefix).await
        {
            tracing::debug!(%prefix, "listing a directory written to: {e}");
        }
        if let Known::Present(_, _) = self.metadata.known(&prefix, name) {
            return Err(FsError::Exists);
        }
        let key = format!("{prefix}{name}");
        let entry = Entry::File(ObjectMeta {
            key: key.clone(),
            size: 0,
            etag: ETag::new(""),
            last_modified: SystemTime::now(),
        });
        let ino = self.inodes.looked_up(parent, name, entry.clone(), None).0;
        let writer = Writer::new(ino, prefix, name.to_owned(), false, opener, self.uploader.start(key, Replace::Never));
        let handle = self.add_writer(writer);
        Ok((self.attr_of(ino, &entry), handle))
    }

    pub(super) fn open_for_writing(
        &self,
        ino: Ino,
        meta: ObjectMeta,
        access: Access,
        opener: Option<u32>,
    ) -> Result<Opened, FsError> {
        self.check_writable()?;
        let replace = self.may_replace(&meta)?;
        let upload = match access {
            Access::Replace => self.uploader.start(meta.key, replace),
            Access::Append => self.uploader.start_appending(Source { key: meta.key, etag: meta.etag, size: meta.size }),
            Access::Read | Access::ReadWrite => {
                return Err(FsError::NotPermitted(
                    "an existing object is replaced whole (O_TRUNC) or appended to (O_APPEND), not changed in place",
                ));
            }
        };
        let (parent, name) = self.inodes.parent_and_name(ino).ok_or(FsError::NotFound)?;
        let prefix = self.dir_prefix(parent)?;
        let writer = Writer::new(ino, prefix, name, true, opener, upload);
        let handle = self.add_writer(writer);
        Ok(Opened { handle, local_copy: None, writing: true })
    }

    /// How an existing object may be replaced: anything with `--allow-overwrite`; without it, only
    /// an object this mount wrote, and only while it still has the ETag the mount gave it (a job
    /// saving its checkpoint again replaces its own files, never another client's).
    pub(super) fn may_replace(&self, meta: &ObjectMeta) -> Result<Replace, FsError> {
        if self.options.writes.allow_overwrite {
            Ok(Replace::Allowed)
        } else if self.writing.object_written_here(&meta.key, &meta.etag) {
            Ok(Replace::IfMatch(meta.etag.clone()))
        } else if self.writing.key_written_here(&meta.key) {
            Err(FsError::NotPermitted(
                "the object this mount wrote was changed by another client since: replacing that needs --allow-overwrite",
            ))
        } else {
            Err(FsError::NotPermitted(
                "changing an object this mount did not write (replacing or appending) needs --allow-overwrite",
            ))
        }
    }

    /// Whether the object `meta` may be deleted, and pinned to which ETag: anything with
    /// `--allow-delete`; without it, only an object this mount wrote, as it wrote it.
    pub(super) fn may_delete(&self, meta: &ObjectMeta) -> Result<Option<crate::object_id::ETag>, FsError> {
        if self.options.writes.allow_delete {
            Ok(None)
        } else if self.writing.object_written_here(&meta.key, &meta.etag) {
            Ok(Some(meta.etag.clone()))
        } else if self.writing.key_written_here(&meta.key) {
            Err(FsError::NotPermitted(
                "the object this mount wrote was changed by another client since: deleting that needs --allow-delete",
            ))
        } else {
            Err(FsError::NotPermitted("deleting an object this mount did not write needs --allow-delete"))
        }
    }

    fn add_writer(&self, writer: Writer<S>) -> u64 {
        self.writing.made_here(writer.ino());
        self.handles.add(Handle::Write(Arc::new(writer)))
    }

    /// Appends `data` at `offset`, which must be where the file ends. A write elsewhere is refused
    /// (EINVAL), and the file will not become an object: it would not hold what was written.
    pub async fn write(&self, handle: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let writer = match self.handles.get(handle) {
            Some(Handle::Write(writer)) => writer,
            Some(Handle::Control(control)) => return Ok(self.write_control(&control, data)),
            Some(Handle::Read(_)) | None => return Err(FsError::BadHandle),
        };
        if let Some(why) = writer.life.refused() {
            return Err(FsError::InvalidWrite(format!("the file will not be written: {why}")));
        }
        let mut upload = writer.upload.lock().await;
        if let Some(Err(e)) = writer.life.outcome() {
            return Err(e);
        }
        match upload.write(offset, data).await {
            Ok(()) => {}
            Err(e @ WriteError::NotAtEnd { .. }) => {
                writer.life.refuse("a write was not at the end of the file (files are written front to back)");
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        }
        Ok(data.len() as u32)
    }

    /// For a close that does not complete the file: fails (`EIO`) if the file replaces the empty
    /// object its early close made, and another client has replaced that object since, so what
    /// was written will not be stored (the upload is pinned to the empty object). The file is
    /// then not written at all.
    pub(super) async fn check_still_ours(&self, writer: &Writer<S>) -> Result<(), FsError> {
        let (key, empty) = {
            let upload = writer.upload.lock().await;
            match upload.replacing_empty() {
                Some(empty) => (upload.key().to_owned(), empty.clone()),
                None => return Ok(()),
            }
        };
        match self.within_deadline(async { Ok(self.store.head(&key).await?) }).await {
            Ok(meta) if meta.etag == empty => Ok(()),
            Ok(_) | Err(FsError::Store(StoreError::NotFound)) => {
                writer
                    .life
                    .refuse("another client replaced the empty object this file made; what was written is not stored");
                tracing::warn!(%key, "another client replaced the empty object this file made: the bytes written since are not stored");
                Err(FsError::UploadFailed(
                    "another client replaced the empty object this file made; what was written is not stored".into(),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Completes a file being written and reports how that went.
    pub(super) async fn finish(&self, writer: &Writer<S>) -> Result<Finished, FsError> {
        let mut upload = writer.upload.lock().await;
        if let Some(why) = writer.life.refused() {
            // What the program saw fail was its write; nothing of the file is kept, not even the
            // empty object an early close made.
            if let Some(before) = writer.life.discard() {
                upload.cancel(before).await;
                let place = writer.place();
                self.metadata.forget_listing(&place.prefix);
                self.metadata.store_missing(&place.prefix, &place.name);
                tracing::warn!(key = upload.key(), "the file was not written: {why}");
            }
            return Ok(Finished::default());
        }
        if let Some(outcome) = writer.life.outcome() {
            return outcome.map(|()| Finished::default());
        }
        match upload.finish().await {
            Ok(_) if upload.untouched() => Ok(Finished::default()),
            Ok(etag) => Ok(self.completed(writer, upload.key().to_owned(), upload.written(), etag)),
            Err(e) => {
                tracing::warn!(key = upload.key(), "the upload was aborted: {e}");
                Err(FsError::from(e))
            }
        }
    }

    /// The object is in S3: an inode stands for it, and the directory's listing shows it. A file
    /// created here keeps its inode; a replaced object's new version gets a new one, so files open
    /// on the old version keep reading it (and the kernel's pages of it).
    fn completed(&self, writer: &Writer<S>, key: String, size: u64, etag: ETag) -> Finished {
        self.writing.wrote_object(key.clone(), etag.clone());
        let entry = Entry::File(ObjectMeta { key, size, etag, last_modified: SystemTime::now() });
        let old = writer.ino();
        let replaced = match writer.replacing {
            true => match self.inodes.parent_and_name(old) {
                Some((parent, name)) => {
                    let ino = self.inodes.number_for(parent, &name, &entry, None);
                    writer.set_ino(ino);
                    self.writing.made_here(ino);
                    (ino != old).then_some(old)
                }
                None => None,
            },
            false => {
                self.inodes.set_entry(old, entry.clone());
                None
            }
        };
        let place = writer.place();
        self.metadata.add_entry(&place.prefix, &place.name, writer.ino(), entry);
        Finished { replaced }
    }

    /// Completes a file whose last descriptor was closed before it was completed (a failure can
    /// only be logged: nobody waits for it).
    pub async fn finish_released(&self, unfinished: UnfinishedUpload<S>) -> Finished {
        self.finish(&unfinished.0).await.unwrap_or_default()
    }

    /// `fallocate` on a file being written: S3 objects have no holes or reserved room, and a file
    /// whose size a program could not set will not hold what it meant, so it is not written.
    pub fn allocate(&self, handle: u64) -> Result<(), FsError> {
        if let Some(Handle::Write(writer)) = self.handles.get(handle) {
            writer.life.refuse("fallocate was refused (an object's size comes only from writing)");
        }
        Err(FsError::Unsupported("S3 objects have no room reserved ahead of their bytes"))
    }

    /// Deletes the object `name` in `parent`, with `--allow-delete`.
    pub async fn unlink(&self, parent: Ino, name: &str) -> Result<(), FsError> {
        self.check_writable()?;
        if self.is_reserved(parent, name) {
            return Err(RESERVED);
        }
        let prefix = self.dir_prefix(parent)?;
        if self.handles.writer_at(&prefix, name).is_some() {
            return Err(FsError::Busy);
        }
        let entry = match self.metadata.known(&prefix, name) {
            Known::Present(_, entry) => entry,
            Known::Missing => return Err(FsError::NotFound),
            Known::Unknown => self.within_deadline(self.ask_store(&prefix, name)).await?,
        };
        let Entry::File(meta) = entry else { return Err(FsError::IsADirectory) };
        let pinned = self.may_delete(&meta)?;
        let deleting = self.store.delete_object(&meta.key, pinned.as_ref());
        match self.within_deadline(async { Ok(deleting.await?) }).await {
            Ok(()) => {}
            Err(FsError::Store(StoreError::PreconditionFailed)) => {
                self.metadata.forget_listing(&prefix);
                tracing::warn!(key = %meta.key, "not deleted: another client changed the object this mount wrote");
                return Err(FsError::NotPermitted(
                    "the object this mount wrote was changed by another client since: deleting that needs --allow-delete",
                ));
            }
            Err(e) => return Err(e),
        }
        self.writing.forget_object(&meta.key);
        self.keep_emptied(&prefix);
        self.metadata.forget_listing(&prefix);
        self.metadata.store_missing(&prefix, name);
        Ok(())
    }

    /// A directory whose object was deleted or moved away stays until `rmdir`, as on a local
    /// disk: S3 would drop it with its last object, and `rm -r` or `mv`, which empty a directory
    /// and then remove it, would find it gone.
    pub(super) fn keep_emptied(&self, prefix: &str) {
        if prefix != self.options.root_prefix {
            self.writing.add_local_dir(prefix.to_owned());
        }
    }

    /// Makes a directory that exists here until a file is written under it (S3 has no
    /// directories, only key prefixes).
    pub async fn mkdir(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        let prefix = self.prefix_for_new(parent, name)?;
        let exists = match self.metadata.known(&prefix, name) {
            Known::Present(_, _) => true,
            Known::Missing => false,
            Known::Unknown => match self.within_deadline(self.ask_store(&prefix, name)).await {
                Ok(_) => true,
                Err(FsError::NotFound) => false,
                Err(e) => return Err(e),
            },
        };
        let dir_prefix = format!("{prefix}{name}/");
        if exists || self.handles.writer_at(&prefix, name).is_some() || self.writing.is_local_dir(&dir_prefix) {
            return Err(FsError::Exists);
        }
        self.writing.add_local_dir(dir_prefix.clone());
        let entry = Entry::Directory { prefix: dir_prefix };
        let ino = self.bind(parent, name, &entry, None);
        self.writing.made_here(ino);
        Ok(self.attr_of(ino, &entry))
    }

    /// Removes a directory that holds nothing: one made here, or one whose objects are all
    /// deleted (S3 has no directories: it is gone already, unless a marker object stands for it,
    /// which is deleted with `--allow-delete`).
    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<(), FsError> {
        self.check_writable()?;
        if self.is_reserved(parent, name) {
            return Err(RESERVED);
        }
        let parent_prefix = self.dir_prefix(parent)?;
        let dir_prefix = format!("{parent_prefix}{name}/");
        if self.handles.writing_under(&dir_prefix) || self.writing.local_dirs_under(&dir_prefix) {
            return Err(FsError::Busy);
        }
        let page = self.within_deadline(async { Ok(self.store.list_page(&dir_prefix, None, Some(2)).await?) }).await?;
        let marker = page.objects.iter().find(|o| o.key == dir_prefix).cloned();
        if page.objects.len() > usize::from(marker.is_some()) || !page.prefixes.is_empty() {
            return Err(FsError::NotEmpty);
        }
        if let Some(marker) = marker {
            // Only an empty object is a directory marker; one with bytes is data at the
            // directory's name, which rmdir does not delete.
            if marker.size > 0 {
                tracing::warn!(key = %marker.key, size = marker.size, "rmdir: the directory's own key holds data; not deleted");
                return Err(FsError::NotEmpty);
            }
            if !self.options.writes.allow_delete {
                return Err(FsError::NotPermitted(
                    "the directory is a marker object: deleting it needs --allow-delete",
                ));
            }
            let deleting = self.store.delete_object(&marker.key, Some(&marker.etag));
            self.within_deadline(async { Ok(deleting.await?) }).await?;
        }
        self.writing.remove_local_dir(&dir_prefix);
        self.metadata.forget_under(&dir_prefix);
        self.metadata.forget_listing(&parent_prefix);
        self.metadata.store_missing(&parent_prefix, name);
        Ok(())
    }

    /// `chmod`, `chown`, `touch` and `truncate`: mode, owner and times come from the mount's
    /// flags and S3, so they are accepted as no-ops on directories (S3 keeps nothing for them) and
    /// on files this mount wrote (`tar -x` and `touch` set them), and refused on other objects. A
    /// size can change only by writing: another size is EINVAL, and a file being written whose
    /// size was refused will not be written.
    pub fn setattr(&self, ino: Ino, change: AttrChange) -> Result<Attr, FsError> {
        // A control file is written to, never truncated: `>` onto it opens it with O_TRUNC.
        if let Some(attr) = self.control_attr(ino) {
            return Ok(attr);
        }
        self.check_writable()?;
        let entry = self.inodes.get(ino).ok_or(FsError::NotFound)?;
        let attr = self.attr_of(ino, &entry);
        if let Some(size) = change.size
            && size != attr.size
        {
            let why = "a size can change only by writing (files are written front to back)";
            if let Some(writer) = self.handles.any_writer_of(ino) {
                writer.life.refuse(why);
            }
            return Err(FsError::InvalidWrite(why.into()));
        }
        let made_here = self.writing.written_here(ino) || self.handles.writer_of(ino).is_some();
        if change.metadata && !made_here && attr.kind == Kind::File {
            return Err(FsError::NotPermitted("modes, owners and times come from the mount's flags and from S3"));
        }
        Ok(attr)
    }

    /// Whether the mount accepts changes at all.
    pub fn writable(&self) -> bool {
        !self.options.writes.read_only
    }
}
