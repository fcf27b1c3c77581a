//! Room under a connection cap. A server with a fixed number of slots is
//! easy to lock out: open every slot and never finish a request
//! (slowloris). Instead of turning a new client away, the servers close the
//! connection that has waited longest without a complete request and give
//! its slot to the newcomer. A real client writes its request right after
//! connecting, so it is always among the newest, and an attacker must
//! finish requests (and be served, and be counted) to keep a slot.
//!
//! A waiting connection parks its slot (any permit type `P`) in the queue;
//! it takes the slot back when its request is complete, unless it was
//! evicted first, in which case the slot went to the connection that
//! evicted it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A free slot, or the slot of the connection that has waited longest.
/// Connections accepted a moment ago have not joined the queue yet (their
/// tasks have not run): after a burst of accepts the queue can be empty
/// while every slot is held by a newcomer, so the accept loop yields once
/// and looks again before it turns anyone away.
pub async fn take_slot(
    slots: &Arc<Semaphore>,
    evict: impl Fn() -> Option<OwnedSemaphorePermit>,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(p) = Arc::clone(slots).try_acquire_owned() {
        return Some(p);
    }
    if let Some(p) = evict() {
        return Some(p);
    }
    tokio::task::yield_now().await;
    Arc::clone(slots).try_acquire_owned().ok().or_else(evict)
}

/// Connections waiting for a request, oldest first, with their slots.
#[derive(Debug)]
pub struct WaitQueue<P> {
    inner: Mutex<Inner<P>>,
}

impl<P> Default for WaitQueue<P> {
    fn default() -> Self {
        WaitQueue {
            inner: Mutex::new(Inner {
                next: 0,
                waiting: BTreeMap::new(),
            }),
        }
    }
}

#[derive(Debug)]
struct Inner<P> {
    next: u64,
    waiting: BTreeMap<u64, (Arc<Notify>, P)>,
}

impl<P> WaitQueue<P> {
    fn lock(&self) -> MutexGuard<'_, Inner<P>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place in line, taken when the connection is accepted. The task
    /// that serves a connection may start later than a younger one's (the
    /// runtime runs the newest spawn first, and the other worker steals), so
    /// the order of acceptance is fixed here, before any task runs.
    pub fn place(&self) -> Place {
        let mut q = self.lock();
        let id = q.next;
        q.next += 1;
        Place(id)
    }

    /// Parks `slot` while this connection waits for a request, at a place
    /// taken now (for a later request on the same connection).
    pub fn wait(&self, slot: P) -> Ticket<'_, P> {
        let place = self.place();
        self.wait_at(place, slot)
    }

    /// Parks `slot` at `place` (taken at accept) while this connection
    /// waits for its first request.
    pub fn wait_at(&self, place: Place, slot: P) -> Ticket<'_, P> {
        let evict = Arc::new(Notify::new());
        self.lock()
            .waiting
            .insert(place.0, (Arc::clone(&evict), slot));
        Ticket {
            queue: self,
            id: place.0,
            evict,
        }
    }

    /// Tells the connection that has waited longest to close, and hands
    /// over its slot; `None` when nobody waits (every slot is serving).
    pub fn evict_oldest(&self) -> Option<P> {
        let (_, (evict, slot)) = self.lock().waiting.pop_first()?;
        // notify_one keeps the notice if the task is not polling yet.
        evict.notify_one();
        Some(slot)
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a connection stands in line, by when it began to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place(u64);

/// A connection parked in the queue.
#[derive(Debug)]
pub struct Ticket<'a, P> {
    queue: &'a WaitQueue<P>,
    id: u64,
    evict: Arc<Notify>,
}

impl<P> Ticket<'_, P> {
    /// Completes when this connection has been evicted.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// Leaves the queue with the slot back; `None` if the connection was
    /// evicted meanwhile (its slot is someone else's now).
    pub fn done(self) -> Option<P> {
        self.queue.lock().waiting.remove(&self.id).map(|(_, p)| p)
    }
}

impl<P> Drop for Ticket<'_, P> {
    fn drop(&mut self) {
        // Dropped without `done` (the connection ended while waiting): the
        // slot is released with the entry.
        self.queue.lock().waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_oldest_waiting_connection_hands_over_its_slot() {
        let q: WaitQueue<&str> = WaitQueue::default();
        assert_eq!(q.evict_oldest(), None);
        let old = q.wait("slot-1");
        let served = q.wait("slot-2");
        let young = q.wait("slot-3");
        assert_eq!(served.done(), Some("slot-2"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.evict_oldest(), Some("slot-1"));
        // The notice waits for the oldest even though it was not polling.
        tokio::time::timeout(Duration::from_secs(1), old.evicted())
            .await
            .expect("the oldest is told");
        assert_eq!(old.done(), None, "its slot went to the newcomer");
        let young_told = tokio::time::timeout(Duration::from_millis(50), young.evicted()).await;
        assert!(young_told.is_err(), "the youngest stays");
        drop(young);
        assert!(q.is_empty());
    }

    #[test]
    fn the_order_is_the_order_of_acceptance_not_of_parking() {
        let q: WaitQueue<&str> = WaitQueue::default();
        let first = q.place();
        let second = q.place();
        // The younger connection's task happens to run first.
        let _young = q.wait_at(second, "slot-2");
        let _old = q.wait_at(first, "slot-1");
        assert_eq!(q.evict_oldest(), Some("slot-1"));
        // A later request's wait queues behind everyone already waiting.
        let _again = q.wait("slot-3");
        assert_eq!(q.evict_oldest(), Some("slot-2"));
        assert_eq!(q.evict_oldest(), Some("slot-3"));
    }
}
