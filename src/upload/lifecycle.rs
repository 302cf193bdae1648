//! Where a file being written is in its life, as one state: the upload moves it as it finishes or
//! is written again, the mount as it refuses a write. The mount reads it without waiting for the
//! upload's lock (which a write holds while a part goes up).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::errno::FsError;
use crate::object_id::ETag;

#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// Being written, or opened and not written yet.
    Writing,
    /// Opened to append and closed by its opener before anything was appended: the object is as
    /// it was. A write through a descriptor still open appends after all.
    LeftAsItWas,
    /// Complete: the object is in S3.
    Complete,
    /// Complete with nothing written: the empty object (this ETag) is in S3. A write at offset 0
    /// through a descriptor still open starts the file again, replacing that object only if it is
    /// still the one there (a shell's redirection for a builtin closes the file it opened first).
    CompleteEmpty(ETag),
    /// Finishing failed: nothing of it is in S3, and every later close says so.
    Failed(FsError),
    /// A write or a size change was refused: the file would not hold what the program meant, so
    /// it is not written. What it was before (an empty object an early close made goes with it).
    Refused { why: &'static str, before: Box<Stage> },
    /// Refused, and given up: nothing of it is kept.
    Discarded { why: &'static str },
}

impl Stage {
    /// How finishing went, once it has: `None` while the file is still being written.
    fn outcome(&self) -> Option<Result<(), FsError>> {
        match self {
            Stage::Writing => None,
            Stage::LeftAsItWas | Stage::Complete | Stage::CompleteEmpty(_) | Stage::Discarded { .. } => Some(Ok(())),
            Stage::Failed(e) => Some(Err(e.clone())),
            Stage::Refused { before, .. } => before.outcome(),
        }
    }
}

pub struct Lifecycle {
    stage: Mutex<Stage>,
    /// Bytes the file holds so far (an appended object's included): its size while written.
    written: AtomicU64,
}

impl Lifecycle {
    pub(super) fn new(written: u64) -> Self {
        Self { stage: Mutex::new(Stage::Writing), written: AtomicU64::new(written) }
    }

    pub fn stage(&self) -> Stage {
        crate::sync::lock(&self.stage).clone()
    }

    pub(super) fn set(&self, stage: Stage) {
        *crate::sync::lock(&self.stage) = stage;
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub(super) fn set_written(&self, bytes: u64) {
        self.written.store(bytes, Ordering::Relaxed);
    }

    /// How finishing went, once it has.
    pub fn outcome(&self) -> Option<Result<(), FsError>> {
        crate::sync::lock(&self.stage).outcome()
    }

    /// Still being written: not finished, or finished early and written again.
    pub fn unfinished(&self) -> bool {
        self.outcome().is_none()
    }

    /// The file will not be written, for this reason (the first refusal's).
    pub fn refuse(&self, why: &'static str) {
        let mut stage = crate::sync::lock(&self.stage);
        if !matches!(*stage, Stage::Refused { .. } | Stage::Discarded { .. }) {
            let before = Box::new(std::mem::replace(&mut *stage, Stage::Writing));
            *stage = Stage::Refused { why, before };
        }
    }

    pub fn refused(&self) -> Option<&'static str> {
        match &*crate::sync::lock(&self.stage) {
            Stage::Refused { why, .. } | Stage::Discarded { why } => Some(why),
            _ => None,
        }
    }

    /// Gives the refused file up: what it was before its refusal, for the first call only.
    pub fn discard(&self) -> Option<Stage> {
        let mut stage = crate::sync::lock(&self.stage);
        let Stage::Refused { why, .. } = &*stage else { return None };
        let why = *why;
        match std::mem::replace(&mut *stage, Stage::Discarded { why }) {
            Stage::Refused { before, .. } => Some(*before),
            _ => None,
        }
    }

    /// Whether the release of its last descriptor still has to finish the file: never finished,
    /// or written again since, or refused and not yet given up.
    pub fn needs_finishing(&self) -> bool {
        let stage = crate::sync::lock(&self.stage);
        matches!(*stage, Stage::Refused { .. }) || stage.outcome().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_finished_empty_and_written_again_is_unfinished_until_finished_again() {
        let life = Lifecycle::new(0);
        assert!(life.unfinished() && life.needs_finishing());
        life.set(Stage::CompleteEmpty(ETag::new("\"e\"")));
        assert_eq!(life.outcome(), Some(Ok(())));
        assert!(!life.needs_finishing());
        life.set(Stage::Writing);
        assert!(life.unfinished());
        life.set(Stage::Failed(FsError::UploadFailed("no".into())));
        assert!(matches!(life.outcome(), Some(Err(_))) && !life.needs_finishing());
    }

    #[test]
    fn the_first_refusal_holds_and_giving_up_says_what_there_was_once() {
        let life = Lifecycle::new(0);
        life.set(Stage::CompleteEmpty(ETag::new("\"e\"")));
        life.refuse("first");
        life.refuse("second");
        assert_eq!(life.refused(), Some("first"));
        assert_eq!(life.outcome(), Some(Ok(())), "a refusal does not change how finishing went");
        assert!(life.needs_finishing(), "its empty object is to be removed at the release");
        assert_eq!(life.discard(), Some(Stage::CompleteEmpty(ETag::new("\"e\""))));
        assert_eq!(life.discard(), None, "once");
        assert_eq!(life.refused(), Some("first"), "later writes are still refused");
        assert!(!life.needs_finishing());
    }
}
