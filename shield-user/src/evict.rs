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
//!
//! "Always among the newest" fails when the accept loop outruns the
//! connection tasks: a flood of connections that do send whole requests
//! can be accepted many at a time, and a real client's connection
//! accepted among them would be evicted before its task ever read the
//! request already in its buffer. A server can therefore park a
//! connection as *unread* ([`WaitQueue::park_unread`]): it cannot be
//! evicted until its task has looked for its request once and found it
//! incomplete ([`Ticket::arm`]), and a newcomer that finds no free or
//! spare slot while unread connections hold slots waits for their tasks
//! ([`take_slot_patiently`]) before it evicts anyone or is turned away;
//! the newcomers behind it wait in the kernel's listen backlog.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, futures::Notified};

/// A free slot, or the slot of the connection that has waited longest.
/// Every accepted connection is parked at accept ([`WaitQueue::park`]), so
/// an empty queue means every slot is serving a request: there is nothing
/// to wait for before turning the newcomer away.
pub fn take_slot(
    slots: &Arc<Semaphore>,
    evict: impl Fn() -> Option<OwnedSemaphorePermit>,
) -> Option<OwnedSemaphorePermit> {
    Arc::clone(slots).try_acquire_owned().ok().or_else(evict)
}

/// A slot for a newcomer, in this order: a free one; the slot of the
/// oldest connection in `answered` (already answered, its client still
/// reading or not closing); while connections parked unread in `waiting`
/// or being `serving`d hold slots, waits (at most `limit`) for a slot to
/// free or for those connections to move on; then the slot of the
/// connection in `waiting` that has waited longest since it was found
/// without a request. `None` when every slot is serving a request.
///
/// Why wait before evicting from `waiting`: a burst of accepts can use up
/// `answered` while the connections just accepted still sit unread, or
/// wait for a rendering they share, and the only evictable entry left is
/// then a real client that was slow to write its request after connecting
/// (a loaded host deschedules it between the two). The unread and served
/// connections are about to be answered, and their slots to be the next
/// in `answered`; a served one waits at most for its own timeout. Idle
/// connections (slowloris) are still evicted, once nothing is left to wait
/// for.
pub async fn take_slot_patiently(
    slots: &Arc<Semaphore>,
    waiting: &WaitQueue<OwnedSemaphorePermit>,
    answered: &WaitQueue<OwnedSemaphorePermit>,
    serving: &Serving,
    limit: Duration,
) -> Option<OwnedSemaphorePermit> {
    let wait = async {
        loop {
            // Registered before looking, so a change between the look and
            // the wait is not missed.
            let (read, served) = (waiting.changed(), answered.changed());
            tokio::pin!(read, served);
            read.as_mut().enable();
            served.as_mut().enable();
            if let Some(slot) = take_slot(slots, || answered.evict_oldest()) {
                return Some(slot);
            }
            if !waiting.has_unread() && !serving.any() {
                return waiting.evict_oldest();
            }
            tokio::select! {
                () = read => {}
                () = served => {}
                slot = Arc::clone(slots).acquire_owned() => return slot.ok(),
            }
        }
    };
    match tokio::time::timeout(limit, wait).await {
        Ok(slot) => slot,
        // Still nothing after that long: evict what can be.
        Err(_) => take_slot(slots, || {
            answered.evict_oldest().or_else(|| waiting.evict_oldest())
        }),
    }
}

/// Connections holding a slot while their request is served: neither
/// waiting for a request nor answered yet (a metrics request waiting for a
/// rendering). They cannot be evicted, and will be answered.
#[derive(Debug, Default)]
pub struct Serving {
    count: AtomicUsize,
}

impl Serving {
    /// Counts a connection as served until the guard is dropped.
    pub fn enter(&self) -> Served<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Served(self)
    }

    /// Whether any connection is being served.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }
}

/// One connection being served ([`Serving::enter`]).
#[derive(Debug)]
pub struct Served<'a>(&'a Serving);

impl Drop for Served<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connections waiting for a request, oldest first, with their slots.
#[derive(Debug)]
pub struct WaitQueue<P> {
    inner: Mutex<Inner<P>>,
    /// Told when a connection joins the queue, becomes evictable or leaves.
    changed: Notify,
}

impl<P> Default for WaitQueue<P> {
    fn default() -> Self {
        WaitQueue {
            inner: Mutex::new(Inner {
                next: 0,
                waiting: BTreeMap::new(),
            }),
            changed: Notify::new(),
        }
    }
}

#[derive(Debug)]
struct Inner<P> {
    next: u64,
    waiting: BTreeMap<u64, Entry<P>>,
}

#[derive(Debug)]
struct Entry<P> {
    evict: Arc<Notify>,
    slot: P,
    /// Its task has looked for its request; only such entries are evicted.
    armed: bool,
}

impl<P> WaitQueue<P> {
    fn lock(&self) -> MutexGuard<'_, Inner<P>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `slot` for a connection accepted just now, before its task
    /// runs. The task may start much later than a younger connection's (the
    /// runtime runs the newest spawn first, the other worker steals, and a
    /// loaded host may not schedule either for a while); until it does, the
    /// connection must already be in line, in the order of acceptance, and
    /// its slot must be one a newcomer can take.
    pub fn park(&self, slot: P) -> Parked {
        self.insert(slot, true)
    }

    /// Like [`WaitQueue::park`], but the connection cannot be evicted
    /// until its task calls [`Ticket::arm`]: its request may already be
    /// waiting in its buffer (see the module notes).
    pub fn park_unread(&self, slot: P) -> Parked {
        self.insert(slot, false)
    }

    fn insert(&self, slot: P, armed: bool) -> Parked {
        let mut q = self.lock();
        let id = q.next;
        q.next += 1;
        let evict = Arc::new(Notify::new());
        let entry = Entry {
            evict: Arc::clone(&evict),
            slot,
            armed,
        };
        q.waiting.insert(id, entry);
        drop(q);
        // A newcomer waiting for room wants to know of an answered one.
        self.changed.notify_waiters();
        Parked { id, evict }
    }

    /// The ticket of a connection parked at accept; the connection's task
    /// takes it first thing, so that its end releases the entry.
    pub fn ticket(&self, parked: Parked) -> Ticket<'_, P> {
        Ticket {
            queue: self,
            id: parked.id,
            evict: parked.evict,
        }
    }

    /// Parks `slot` while this connection waits for a later request; it
    /// queues behind everyone already waiting.
    pub fn wait(&self, slot: P) -> Ticket<'_, P> {
        let parked = self.park(slot);
        self.ticket(parked)
    }

    /// Tells the connection that has waited longest to close, and hands
    /// over its slot; `None` when nobody waits (every slot is serving).
    pub fn evict_oldest(&self) -> Option<P> {
        let mut q = self.lock();
        let id = q.waiting.iter().find(|(_, e)| e.armed).map(|(id, _)| *id)?;
        let entry = q.waiting.remove(&id)?;
        // notify_one keeps the notice if the task is not polling yet.
        entry.evict.notify_one();
        Some(entry.slot)
    }

    /// Whether a connection parked unread has not been looked at yet.
    pub fn has_unread(&self) -> bool {
        self.lock().waiting.values().any(|e| !e.armed)
    }

    /// Completes after the next time a connection joins the queue, becomes
    /// evictable or leaves it.
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    fn remove(&self, id: u64) -> Option<P> {
        let entry = self.lock().waiting.remove(&id);
        if entry.is_some() {
            self.changed.notify_waiters();
        }
        entry.map(|e| e.slot)
    }

    /// Connections waiting now.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection parked at accept whose task has not taken its ticket yet.
#[derive(Debug)]
pub struct Parked {
    id: u64,
    evict: Arc<Notify>,
}

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
        self.queue.remove(self.id)
    }

    /// Makes a connection parked unread evictable: its task looked for its
    /// request and found it incomplete.
    pub fn arm(&self) {
        let armed = self
            .queue
            .lock()
            .waiting
            .get_mut(&self.id)
            .is_some_and(|e| !std::mem::replace(&mut e.armed, true));
        if armed {
            self.queue.changed.notify_waiters();
        }
    }
}

impl<P> Drop for Ticket<'_, P> {
    fn drop(&mut self) {
        // Dropped without `done` (the connection ended while waiting): the
        // slot is released with the entry.
        self.queue.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    type Queue = Arc<WaitQueue<OwnedSemaphorePermit>>;

    /// A server's slots and queues.
    #[derive(Clone)]
    struct Room {
        slots: Arc<Semaphore>,
        waiting: Queue,
        answered: Queue,
        serving: Arc<Serving>,
    }

    impl Room {
        fn new(slots: usize) -> Room {
            Room {
                slots: Arc::new(Semaphore::new(slots)),
                waiting: Queue::default(),
                answered: Queue::default(),
                serving: Arc::default(),
            }
        }

        fn slot(&self) -> OwnedSemaphorePermit {
            Arc::clone(&self.slots).try_acquire_owned().expect("a slot")
        }

        /// A connection whose task looked for its request and found none
        /// (idle, or a client slow to write).
        fn idle(&self) -> Ticket<'_, OwnedSemaphorePermit> {
            let t = self.waiting.ticket(self.waiting.park_unread(self.slot()));
            t.arm();
            t
        }

        /// A newcomer looking for room, in a task of its own.
        fn newcomer(&self) -> tokio::task::JoinHandle<Option<OwnedSemaphorePermit>> {
            let room = self.clone();
            tokio::spawn(async move {
                take_slot_patiently(
                    &room.slots,
                    &room.waiting,
                    &room.answered,
                    &room.serving,
                    Duration::from_secs(30),
                )
                .await
            })
        }

        /// The newcomer got `reply`'s slot, and the slow writer kept its own.
        async fn newcomer_took(
            &self,
            newcomer: tokio::task::JoinHandle<Option<OwnedSemaphorePermit>>,
            reply: Ticket<'_, OwnedSemaphorePermit>,
        ) {
            let got = newcomer.await.expect("the task ran");
            assert!(got.is_some(), "the newcomer has a slot");
            assert!(reply.done().is_none(), "the answered one made room");
            assert_eq!(self.waiting.len(), 1, "the slow writer is still in line");
        }
    }

    async fn let_it_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// The burst of the module notes: the only evictable connection is a
    /// real client that was slow to write, while a connection accepted just
    /// before is unread with its request in its buffer. The newcomer waits
    /// for that one to be answered and takes its slot instead.
    #[tokio::test]
    async fn a_slow_writer_is_not_evicted_while_unread_connections_are_about_to_make_room() {
        let room = Room::new(2);
        let _slow = room.idle();
        let unread = room.waiting.park_unread(room.slot());
        let newcomer = room.newcomer();
        let_it_run().await;
        assert!(!newcomer.is_finished(), "it waits for the unread one");
        assert_eq!(room.waiting.len(), 2, "nobody evicted yet");
        // The unread connection's task finds its request and answers it.
        let slot = room.waiting.ticket(unread).done().expect("not evicted");
        let reply = room.answered.wait(slot);
        room.newcomer_took(newcomer, reply).await;
    }

    /// Every other slot waits for a rendering: the newcomer waits for them
    /// to be answered rather than evict the slow writer or be turned away.
    #[tokio::test]
    async fn a_slow_writer_is_not_evicted_while_served_connections_are_about_to_make_room() {
        let room = Room::new(2);
        let _slow = room.idle();
        let slot = room.slot();
        let served = room.serving.enter();
        let newcomer = room.newcomer();
        let_it_run().await;
        assert!(!newcomer.is_finished(), "it waits for the served one");
        let reply = room.answered.wait(slot);
        drop(served);
        room.newcomer_took(newcomer, reply).await;
    }

    #[tokio::test]
    async fn idle_connections_are_evicted_once_nothing_is_left_to_wait_for() {
        let room = Room::new(1);
        let idle = room.idle();
        let got = room.newcomer().await.expect("the task ran");
        assert!(got.is_some(), "the idle connection's slot");
        assert!(idle.done().is_none(), "it was evicted");
    }

    #[tokio::test]
    async fn a_connection_is_in_line_from_accept_before_its_task_runs() {
        let q: WaitQueue<&str> = WaitQueue::default();
        let first = q.park("slot-1");
        let second = q.park("slot-2");
        // Neither task has run: both are evictable, oldest first, and the
        // notice waits for the task.
        assert_eq!(q.len(), 2);
        assert_eq!(q.evict_oldest(), Some("slot-1"));
        let old = q.ticket(first);
        tokio::time::timeout(Duration::from_secs(1), old.evicted())
            .await
            .expect("the oldest is told once its task runs");
        assert_eq!(old.done(), None);
        // A later request's wait queues behind everyone already waiting.
        let young = q.ticket(second);
        let _again = q.wait("slot-3");
        assert_eq!(q.evict_oldest(), Some("slot-2"));
        assert_eq!(q.evict_oldest(), Some("slot-3"));
        drop(young);
        assert!(q.is_empty());
    }
}
