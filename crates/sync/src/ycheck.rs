//! Containing `yrs` on input from the network.
//!
//! `yrs` can panic on a crafted update (fuzzing found an `unwrap` on `None`
//! in `BlockStore::push`, yrs 0.28.1). A panic on the commit path would stop
//! the committer for every document, and an update that panics on apply but
//! is already in the log would make its document impossible to load. So:
//!
//! - before an update is committed, `trial_apply` applies it to a scratch
//!   document under `catch_unwind`; an update that panics there is refused
//!   like one that does not decode (the session is closed, nothing is
//!   stored);
//! - every apply to a live document goes through [`apply_contained`] or
//!   [`apply_decoded`], which also catch a panic, so an update that only
//!   panics against some existing state is logged and skipped instead of
//!   taking the node down.
//!
//! A leaf: it imports nothing else of this crate.

use std::panic::{AssertUnwindSafe, catch_unwind};

use yrs::updates::decoder::Decode;
use yrs::{Doc, Options, Transact, Update};

/// Why `yrs` would not take an update.
#[derive(Debug, thiserror::Error)]
pub enum ApplyFailure {
    /// It does not decode.
    #[error("does not decode")]
    Decode(#[source] yrs::encoding::read::Error),
    /// It decodes but `yrs` refused to apply it.
    #[error("refused by yrs")]
    Refused(#[source] yrs::error::UpdateError),
    /// `yrs` panicked on it.
    #[error("yrs panicked applying it")]
    Panicked,
}

/// Applies `update` to `doc`, containing a panic of `yrs`.
pub fn apply_contained(doc: &Doc, update: &[u8]) -> Result<(), ApplyFailure> {
    count_decode();
    let decoded = Update::decode_v1(update).map_err(ApplyFailure::Decode)?;
    apply_decoded(doc, decoded).map(drop)
}

/// Applies a decoded update to `doc`, containing a panic of `yrs`, and
/// tells whether it inserted or deleted anything the document did not hold
/// (`false` for an update it held already, or one whose dependencies it
/// lacks: yrs keeps that pending).
pub fn apply_decoded(doc: &Doc, update: Update) -> Result<bool, ApplyFailure> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        txn.apply_update(update)?;
        Ok(!txn.insert_set().is_empty() || !txn.delete_set().is_empty())
    }));
    match outcome {
        Ok(Ok(added)) => Ok(added),
        Ok(Err(refused)) => Err(ApplyFailure::Refused(refused)),
        Err(_panic) => Err(ApplyFailure::Panicked),
    }
}

thread_local! {
    /// The scratch documents' options, drawn once per thread. `Doc::new`
    /// draws a random client id and formats a random guid (an allocation)
    /// for every document; a scratch document, which nobody edits or
    /// addresses, needs neither to be its own. The document itself is
    /// still fresh for every trial.
    static SCRATCH_OPTIONS: Options = Options::default();
}

/// Applies `update` to a fresh scratch document to see whether `yrs` panics
/// on it. Costs one extra decode and apply of the update on an empty
/// document (an update that depends on missing state is only parked there,
/// cheaply).
pub(crate) fn trial_apply(update: &[u8]) -> Result<(), ApplyFailure> {
    let scratch = SCRATCH_OPTIONS.with(|options| Doc::with_options(options.clone()));
    match apply_contained(&scratch, update) {
        Err(ApplyFailure::Panicked) => Err(ApplyFailure::Panicked),
        Err(ApplyFailure::Decode(error)) => Err(ApplyFailure::Decode(error)),
        // A refusal on an empty document says nothing about the live one.
        Ok(()) | Err(ApplyFailure::Refused(_)) => Ok(()),
    }
}

/// Counts one decode of an update (tests assert how often an update is
/// decoded on its way; a no-op outside tests).
#[inline]
pub(crate) fn count_decode() {
    #[cfg(test)]
    decode_count::bump();
}

/// A per-thread count of update decodes (paused-time tests run on one
/// thread, the committer's task included).
#[cfg(test)]
pub(crate) mod decode_count {
    use std::cell::Cell;

    thread_local! {
        static DECODES: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn bump() {
        DECODES.with(|count| count.set(count.get() + 1));
    }

    /// Decodes on this thread so far.
    pub(crate) fn get() -> usize {
        DECODES.with(Cell::get)
    }
}
