//! Renaming a file: S3 has no rename, so the object is copied on the server (pinned to the
//! source's ETag; in parallel parts above 5 GiB) and the source deleted after. Not atomic: between
//! the two both names exist, and a failure after the copy leaves both (logged), never neither. A
//! file created here and still being written is completed under its new name instead.
//! Directories: `directory.rs`.
//!
//! Who may: a file this mount wrote needs no flag, into a free name or onto another object this
//! mount wrote and nobody changed since (the write-then-rename of checkpoint libraries, saved
//! again, works on a default mount); any other object needs `--allow-delete`, and replacing
//! another client's object `--allow-overwrite`.

mod directory;

use directory::Destination;

use super::inode::Entry;
use super::listing::Known;
use super::writing::{Place, Writer};
use super::{Fs, Ino};
use crate::errno::FsError;
use crate::object_id::ObjectId;
use crate::store::{ObjectMeta, ObjectStore, Replace, StoreError};
use crate::upload::{Source, WriteError};

/// What `rename(2)`'s flags ask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// `RENAME_NOREPLACE`: fail with `EEXIST` if the new name exists.
    pub no_replace: bool,
    /// `RENAME_EXCHANGE`: swap two names, which S3 cannot do.
    pub exchange: bool,
}

impl<S: ObjectStore> Fs<S> {
    /// What `name` in the directory `prefix` is, from what is known or from S3.
    async fn entry_named(&self, prefix: &str, name: &str) -> Result<Option<Entry>, FsError> {
        let local_dir = format!("{prefix}{name}/");
        if self.writing.is_local_dir(&local_dir) {
            return Ok(Some(Entry::Directory { prefix: local_dir }));
        }
        match self.metadata.known(prefix, name) {
            Known::Present(_, entry) => Ok(Some(entry)),
            Known::Missing => Ok(None),
            Known::Unknown => match self.within_deadline(self.ask_store(prefix, name)).await {
                Ok(entry) => Ok(Some(entry)),
                Err(FsError::NotFound) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Renames a file created here and still being written: it will be completed under the new
    /// name. (A file replacing an object stays where it is until it is complete.)
    async fn rename_while_written(
        &self,
        writer: &Writer<S>,
        to: Place,
        new_parent: Ino,
        flags: RenameFlags,
    ) -> Result<(), FsError> {
        if writer.replacing {
            return Err(FsError::Busy);
        }
        let replace = match self.entry_named(&to.prefix, &to.name).await? {
            None => Replace::Never,
            Some(Entry::Directory { .. }) => return Err(FsError::IsADirectory),
            Some(Entry::File(_)) if flags.no_replace => return Err(FsError::Exists),
            Some(Entry::File(target)) => self.may_replace(&target)?,
        };
        let new_key = format!("{}{}", to.prefix, to.name);
        let mut upload = writer.upload.lock().await;
        upload.rename(new_key.clone(), replace);
        drop(upload);
        let from = writer.place();
        writer.move_to(to.clone());
        let ino = writer.ino();
        let entry = match self.inodes.get(ino) {
            Some(Entry::File(meta)) => Entry::File(ObjectMeta { key: new_key, ..meta }),
            _ => return Ok(()),
        };
        self.inodes.moved(ino, new_parent, &to.name, entry);
        self.metadata.forget_listing(&from.prefix);
        self.metadata.store_missing(&from.prefix, &from.name);
        self.metadata.forget_listing(&to.prefix);
        Ok(())
    }

    /// Makes way for a rename onto the object `target`: with `--allow-overwrite` the copy replaces
    /// it; without, only an object this mount wrote may be replaced, and it is deleted first,
    /// pinned to the ETag the mount gave it (a server-side copy cannot be pinned to what it
    /// replaces), so another client's object at that name is never lost.
    async fn clear_for_rename(&self, prefix: &str, target: &ObjectMeta) -> Result<(), FsError> {
        let Replace::IfMatch(etag) = self.may_replace(target)? else { return Ok(()) };
        let deleting = self.store.delete_object(&target.key, Some(&etag));
        match self.within_deadline(async { Ok(deleting.await?) }).await {
            Ok(()) => {
                self.writing.forget_object(&target.key);
                Ok(())
            }
            Err(FsError::Store(StoreError::PreconditionFailed)) => {
                self.metadata.forget_listing(prefix);
                Err(FsError::NotPermitted(
                    "the object this mount wrote was changed by another client since: replacing that needs --allow-overwrite",
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Renames the file `name` in `parent` to `new_name` in `new_parent`.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        flags: RenameFlags,
    ) -> Result<(), FsError> {
        if self.options.writes.read_only {
            return Err(FsError::ReadOnly);
        }
        if flags.exchange {
            return Err(FsError::InvalidWrite("S3 cannot swap two names (RENAME_EXCHANGE)".into()));
        }
        if self.is_reserved(parent, name) {
            return Err(super::write_path::RESERVED);
        }
        let prefix = self.dir_prefix(parent)?;
        let new_prefix = self.prefix_for_new(new_parent, new_name)?;
        if self.handles.writer_at(&new_prefix, new_name).is_some() {
            return Err(FsError::Busy);
        }
        if let Some(writer) = self.handles.writer_at(&prefix, name) {
            return self
                .rename_while_written(
                    &writer,
                    Place { prefix: new_prefix, name: new_name.to_owned() },
                    new_parent,
                    flags,
                )
                .await;
        }
        let meta = match self.entry_named(&prefix, name).await? {
            Some(Entry::File(meta)) => meta,
            Some(Entry::Directory { prefix: from }) => {
                let ino = self.inodes.number_for(parent, name, &Entry::Directory { prefix: from.clone() }, None);
                let to = Destination { parent: new_parent, name: new_name, parent_prefix: &new_prefix };
                return self.rename_directory(ino, &from, to, flags).await;
            }
            None => return Err(FsError::NotFound),
        };
        let ino = self.inodes.number_for(parent, name, &Entry::File(meta.clone()), None);
        let made_here = self.writing.written_here(ino);
        if !made_here && !self.options.writes.allow_delete {
            return Err(FsError::NotPermitted(
                "renaming an object this mount did not write deletes it: that needs --allow-delete",
            ));
        }
        let new_key = format!("{new_prefix}{new_name}");
        if new_key == meta.key {
            return Ok(());
        }
        match self.entry_named(&new_prefix, new_name).await? {
            None => {}
            Some(Entry::Directory { .. }) => return Err(FsError::IsADirectory),
            Some(Entry::File(_)) if flags.no_replace => return Err(FsError::Exists),
            Some(Entry::File(target)) => self.clear_for_rename(&new_prefix, &target).await?,
        }
        let source = Source { key: meta.key.clone(), etag: meta.etag.clone(), size: meta.size };
        let etag = match self.uploader.copy_whole(&source, &new_key).await {
            Ok(etag) => etag,
            Err(WriteError::Failed(StoreError::PreconditionFailed | StoreError::NotFound)) => {
                self.metadata.forget_listing(&prefix);
                return Err(FsError::Stale);
            }
            Err(e) => return Err(e.into()),
        };
        let deleted = self.within_deadline(async { Ok(self.store.delete_object(&meta.key, Some(&meta.etag)).await?) });
        if let Err(e) = deleted.await {
            tracing::warn!(from = %meta.key, to = %new_key, "rename: copied, but deleting the old name failed ({e}): both exist");
            self.metadata.forget_listing(&prefix);
            self.metadata.forget_listing(&new_prefix);
            return Err(e);
        }
        self.fetcher.forget_version(&ObjectId { key: meta.key.clone(), etag: meta.etag.clone() }, meta.size);
        self.keep_emptied(&prefix);
        if self.writing.object_written_here(&meta.key, &meta.etag) {
            self.writing.forget_object(&meta.key);
            self.writing.wrote_object(new_key.clone(), etag.clone());
        }
        let moved = Entry::File(ObjectMeta { key: new_key, etag, ..meta });
        // The kernel looked the name up before renaming it, and moves that inode to the new name.
        self.inodes.moved(ino, new_parent, new_name, moved.clone());
        self.metadata.forget_listing(&prefix);
        self.metadata.store_missing(&prefix, name);
        self.metadata.add_entry(&new_prefix, new_name, ino, moved);
        Ok(())
    }
}
