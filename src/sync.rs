//! The one way this crate takes a lock. Every value behind a `std::sync::Mutex` here is left
//! valid between statements (changed whole, or each change complete before anything can panic),
//! so a lock that a panicking task poisoned still guards a valid value and is taken as it is: a
//! panic ends one task (see `panics`), never every later user of the lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
