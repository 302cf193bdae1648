//! Telling the kernel to forget what it holds of a name or an inode whose object changed.

use std::ffi::OsStr;
use std::sync::OnceLock;

use fuser::INodeNo;

use crate::fs::{Finished, Fs};
use crate::store::ObjectStore;

/// The object behind `ino` changed: the kernel forgets the name, so the next open looks it up
/// again and finds the new version under a new inode.
pub(super) fn forget_name<S: ObjectStore>(fs: &Fs<S>, notifier: &OnceLock<fuser::Notifier>, ino: INodeNo) {
    let (Some(notifier), Some((parent, name))) = (notifier.get().cloned(), fs.parent_and_name(ino.0)) else { return };
    // The kernel takes the directory's lock for this, which a lookup in it may hold while it waits
    // for this runtime: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        if let Err(e) = notifier.inval_entry(INodeNo(parent), OsStr::new(&name)) {
            tracing::debug!("telling the kernel to forget {name:?}: {e}");
        }
    });
}

/// A replaced object's new version has an inode of its own: the kernel forgets the name, so the
/// next open finds the new inode, and what it holds of the old inode (its size, as the writer left
/// it, and pages), so files open on the old version read it whole. Done before the close that
/// completed the file returns, so whatever the writer does next sees the new version.
pub(super) async fn forget_replaced<S: ObjectStore>(
    fs: &Fs<S>,
    notifier: &OnceLock<fuser::Notifier>,
    finished: Finished,
) {
    let Some(old) = finished.replaced else { return };
    let (Some(notifier), Some((parent, name))) = (notifier.get().cloned(), fs.parent_and_name(old)) else { return };
    // The kernel takes the directory's lock, which a lookup may hold while it waits for this
    // runtime: off the runtime's threads.
    let forgetting = tokio::task::spawn_blocking(move || {
        if let Err(e) = notifier.inval_entry(INodeNo(parent), OsStr::new(&name)) {
            tracing::debug!("telling the kernel to forget {name:?}: {e}");
        }
        if let Err(e) = notifier.inval_inode(INodeNo(old), 0, 0) {
            tracing::debug!("telling the kernel to forget inode {old}: {e}");
        }
    });
    let _ = forgetting.await;
}
