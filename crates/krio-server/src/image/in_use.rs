//! Images held by creates in flight, so that `RemoveImage` cannot delete the layers of a
//! container that is still being born (its record joins the container registry only once its
//! rootfs is mounted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::{Result, ServerError};

#[derive(Debug, Default)]
struct Table {
    /// Creates in flight per image id.
    creating: HashMap<String, usize>,
    /// Image ids being removed, each with the sender whose drop (with the removal's mark)
    /// wakes the calls waiting for that removal; nothing is ever sent on it.
    removing: HashMap<String, watch::Sender<()>>,
}

/// Creates in flight and removals in progress, per image id. Registration and the removal's
/// check happen under one lock, so an image is either counted as used by a create or marked as
/// being removed, never both.
#[derive(Debug, Default, Clone)]
pub(crate) struct ImageUse(Arc<Mutex<Table>>);

/// A create's hold on an image; released when dropped (after the container is registered, or
/// the create undone).
#[derive(Debug)]
pub(crate) struct CreateHold {
    table: ImageUse,
    image_id: String,
}

/// A removal's mark on an image; creates of it are refused until it is dropped.
#[derive(Debug)]
pub(crate) struct RemoveMark {
    table: ImageUse,
    image_id: String,
}

/// What [`ImageUse::begin_remove`] found: the image is now marked as being removed by this
/// call, or another removal of it is under way.
#[derive(Debug)]
pub(crate) enum RemoveStart {
    /// This call removes the image; the mark is held until the store's work is done.
    Marked(RemoveMark),
    /// Another call is removing the image; wait for it with [`RemoveInProgress::finished`].
    InProgress(RemoveInProgress),
}

/// A handle on another call's removal of an image.
#[derive(Debug)]
pub(crate) struct RemoveInProgress(watch::Receiver<()>);

impl RemoveInProgress {
    /// Resolves when the removal's mark has been dropped (its store work done, or given up).
    /// Subscribed under the table's lock, so a mark dropped before this is awaited is seen.
    pub(crate) async fn finished(mut self) {
        // Nothing is ever sent: `changed` returns an error once the sender is dropped.
        while self.0.changed().await.is_ok() {}
    }
}

impl ImageUse {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a create of a container of `image_id` as in flight.
    ///
    /// Errors: `FailedPrecondition` naming the image when it is being removed.
    pub(crate) fn begin_create(&self, image_id: &str) -> Result<CreateHold> {
        let mut t = self.lock();
        if t.removing.contains_key(image_id) {
            return Err(ServerError::FailedPrecondition(format!(
                "image {image_id} is being removed"
            )));
        }
        *t.creating.entry(image_id.to_string()).or_default() += 1;
        Ok(CreateHold {
            table: self.clone(),
            image_id: image_id.to_string(),
        })
    }

    /// Marks `image_id` as being removed, after `in_use` (called under the same lock, so no
    /// create can register meanwhile) found no container using it.
    /// [`RemoveStart::InProgress`] when another removal of the same image is already under way.
    ///
    /// Errors: `FailedPrecondition` naming the user when a create in flight or a container
    /// (as `in_use` reports it) uses the image.
    pub(crate) fn begin_remove(
        &self,
        image_id: &str,
        in_use: impl FnOnce() -> Option<String>,
    ) -> Result<RemoveStart> {
        let mut t = self.lock();
        if let Some(n) = t.creating.get(image_id).filter(|n| **n > 0) {
            return Err(ServerError::FailedPrecondition(format!(
                "image {image_id} is in use by {n} container create(s) in progress"
            )));
        }
        if let Some(c) = in_use() {
            return Err(ServerError::FailedPrecondition(format!(
                "image {image_id} is in use by container {c}"
            )));
        }
        if let Some(tx) = t.removing.get(image_id) {
            return Ok(RemoveStart::InProgress(RemoveInProgress(tx.subscribe())));
        }
        t.removing
            .insert(image_id.to_string(), watch::channel(()).0);
        Ok(RemoveStart::Marked(RemoveMark {
            table: self.clone(),
            image_id: image_id.to_string(),
        }))
    }
}

impl Drop for CreateHold {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        if let Some(n) = t.creating.get_mut(&self.image_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.creating.remove(&self.image_id);
            }
        }
    }
}

impl Drop for RemoveMark {
    fn drop(&mut self) {
        // Dropping the sender (outside the lock) wakes the waiters.
        let sender = self.table.lock().removing.remove(&self.image_id);
        drop(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_create_in_flight_blocks_removal_and_a_removal_blocks_creates() {
        let u = ImageUse::default();
        let hold = u.begin_create("sha256:a").unwrap();
        let e = u.begin_remove("sha256:a", || None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("in progress"), "{e}");
        // Another image is not affected.
        assert!(matches!(
            u.begin_remove("sha256:b", || None).unwrap(),
            RemoveStart::Marked(_)
        ));
        drop(hold);
        let e = u
            .begin_remove("sha256:a", || Some("c1".into()))
            .unwrap_err();
        assert!(e.to_string().contains("container c1"), "{e}");
        let RemoveStart::Marked(mark) = u.begin_remove("sha256:a", || None).unwrap() else {
            panic!("not marked");
        };
        assert!(matches!(
            u.begin_remove("sha256:a", || None).unwrap(),
            RemoveStart::InProgress(_)
        ));
        let e = u.begin_create("sha256:a").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        drop(mark);
        let _hold = u.begin_create("sha256:a").unwrap();
    }

    /// Waiters on a removal wake when its mark is dropped, also one that subscribed before
    /// and awaits only after the drop; and not before.
    #[tokio::test]
    async fn waiters_wake_when_the_removal_ends() {
        let u = ImageUse::default();
        let RemoveStart::Marked(mark) = u.begin_remove("sha256:a", || None).unwrap() else {
            panic!("not marked");
        };
        let waiter = |u: &ImageUse| match u.begin_remove("sha256:a", || None).unwrap() {
            RemoveStart::InProgress(w) => w,
            RemoveStart::Marked(_) => panic!("marked twice"),
        };
        let early = waiter(&u);
        let late = waiter(&u);
        let early = tokio::spawn(early.finished());
        tokio::task::yield_now().await;
        assert!(!early.is_finished());
        drop(mark);
        tokio::time::timeout(std::time::Duration::from_secs(5), early)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), late.finished())
            .await
            .unwrap();
        assert!(matches!(
            u.begin_remove("sha256:a", || None).unwrap(),
            RemoveStart::Marked(_)
        ));
    }
}
