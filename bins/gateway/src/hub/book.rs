//! The hub's bookkeeping, pure: which sessions each user has here (the users whose channels
//! this instance wants), which channels the current Redis connection has confirmed, and
//! the one change in flight between the two. No I/O and no clock: the relay task asks
//! [`Book::next_change`] what to send Redis and reports the answer with
//! [`Book::change_done`], so any interleaving of sessions and Redis events can be replayed
//! in a test.
//!
//! Rules that keep "wanted", "confirmed" and Redis in agreement:
//! - Sessions never wait on the relay: joining, leaving and dropping a slow consumer only
//!   change the book and mark the user dirty. The relay reconciles dirty users one at a
//!   time, reading what is wanted *now*, so a leave racing a join (a tab reload) resolves to
//!   the latest state whatever their order.
//! - A channel counts as confirmed only after Redis acknowledged its SUBSCRIBE, and stops
//!   counting before its UNSUBSCRIBE is sent, so a join never mistakes a channel on its way
//!   out for a live one.
//! - A lost connection confirms nothing; the next connection starts from every wanted user.
//! - A joining session that must wait for its user's SUBSCRIBE gets a waiter, answered when
//!   the channel is confirmed (or dropped when the user leaves first).

use std::collections::{HashMap, HashSet, VecDeque};

use tokio::sync::oneshot;

use super::Delivery;
use crate::queue;

/// A session's sender, and the waiters of a user's pending subscription.
#[derive(Default)]
pub struct User {
    pub sessions: HashMap<u64, queue::Sender<Delivery>>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// What the relay must ask Redis next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Subscribe(String),
    Unsubscribe(String),
    /// Pattern mode: the one `PSUBSCRIBE`.
    SubscribePattern,
}

/// The hub's state, behind one lock.
pub struct Book {
    pattern: bool,
    users: HashMap<String, User>,
    /// Channels the current connection has confirmed (per-user mode).
    confirmed: HashSet<String>,
    /// Pattern mode: the `PSUBSCRIBE` is confirmed.
    pattern_confirmed: bool,
    /// Pattern mode: sessions waiting for the `PSUBSCRIBE`.
    pattern_waiters: Vec<oneshot::Sender<()>>,
    /// Users whose wanted and confirmed states may differ, oldest first, each once.
    dirty: VecDeque<String>,
    queued: HashSet<String>,
    link_up: bool,
    in_flight: Option<Change>,
}

impl Book {
    /// An empty book; `pattern`: one subscription for every user instead of one per user.
    pub fn new(pattern: bool) -> Book {
        Book {
            pattern,
            users: HashMap::new(),
            confirmed: HashSet::new(),
            pattern_confirmed: false,
            pattern_waiters: Vec::new(),
            dirty: VecDeque::new(),
            queued: HashSet::new(),
            link_up: false,
            in_flight: None,
        }
    }

    /// Adds session `id` of `user`. `None`: its messages already flow; `Some(waiter)`:
    /// they flow once the waiter is answered.
    pub fn join(
        &mut self,
        user: &str,
        id: u64,
        sender: queue::Sender<Delivery>,
    ) -> Option<oneshot::Receiver<()>> {
        let entry = self.users.entry(user.to_owned()).or_default();
        entry.sessions.insert(id, sender);
        if self.pattern {
            if self.pattern_confirmed {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            self.pattern_waiters.push(tx);
            return Some(rx);
        }
        if self.confirmed.contains(user) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        entry.waiters.push(tx);
        self.mark(user);
        Some(rx)
    }

    /// Removes session `id` of `user` (a leave, or a slow consumer dropped); idempotent.
    /// Returns whether the relay has work to do.
    pub fn leave(&mut self, user: &str, id: u64) -> bool {
        let Some(entry) = self.users.get_mut(user) else {
            return false;
        };
        if entry.sessions.remove(&id).is_none() || !entry.sessions.is_empty() {
            return false;
        }
        // The user's last session: its waiters (none can be left) go with it.
        self.users.remove(user);
        if self.pattern {
            return false;
        }
        self.mark(user);
        true
    }

    /// The sessions of `user`, to hand a message to.
    pub fn user_mut(&mut self, user: &str) -> Option<&mut User> {
        self.users.get_mut(user)
    }

    /// Channels confirmed on the current connection.
    pub fn confirmed(&self) -> usize {
        if self.pattern {
            usize::from(self.pattern_confirmed)
        } else {
            self.confirmed.len()
        }
    }

    #[cfg(test)]
    /// Sessions waiting for a subscription.
    pub fn waiting(&self) -> usize {
        self.pattern_waiters.len() + self.users.values().map(|u| u.waiters.len()).sum::<usize>()
    }

    fn mark(&mut self, user: &str) {
        if self.queued.insert(user.to_owned()) {
            self.dirty.push_back(user.to_owned());
        }
    }

    /// A new Redis connection: nothing is confirmed on it yet; every wanted user is due.
    pub fn link_up(&mut self) {
        self.link_up = true;
        self.in_flight = None;
        self.confirmed.clear();
        self.pattern_confirmed = false;
        self.dirty.clear();
        self.queued.clear();
        let users: Vec<String> = self.users.keys().cloned().collect();
        for user in users {
            self.mark(&user);
        }
    }

    /// The connection is gone: whatever it had confirmed is gone with it.
    pub fn link_down(&mut self) {
        self.link_up = false;
        self.in_flight = None;
        self.confirmed.clear();
        self.pattern_confirmed = false;
    }

    #[cfg(test)]
    pub fn is_link_up(&self) -> bool {
        self.link_up
    }

    /// The next change to ask Redis for, if any; one at a time.
    pub fn next_change(&mut self) -> Option<Change> {
        if !self.link_up || self.in_flight.is_some() {
            return None;
        }
        if self.pattern {
            if self.pattern_confirmed {
                return None;
            }
            self.in_flight = Some(Change::SubscribePattern);
            return self.in_flight.clone();
        }
        while let Some(user) = self.dirty.pop_front() {
            self.queued.remove(&user);
            let wanted = self.users.contains_key(&user);
            let confirmed = self.confirmed.contains(&user);
            let change = match (wanted, confirmed) {
                (true, false) => Change::Subscribe(user),
                (false, true) => {
                    // Not confirmed from now on: a join meanwhile waits for a new SUBSCRIBE.
                    self.confirmed.remove(&user);
                    Change::Unsubscribe(user)
                }
                _ => continue,
            };
            self.in_flight = Some(change.clone());
            return Some(change);
        }
        None
    }

    /// Redis answered the change in flight: `ok`, or the connection failed (then call
    /// [`Book::link_down`]).
    pub fn change_done(&mut self, ok: bool) {
        let Some(change) = self.in_flight.take() else {
            return;
        };
        if !ok {
            return;
        }
        match change {
            Change::SubscribePattern => {
                self.pattern_confirmed = true;
                for waiter in self.pattern_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
            Change::Subscribe(user) => {
                self.confirmed.insert(user.clone());
                match self.users.get_mut(&user) {
                    Some(entry) => {
                        for waiter in entry.waiters.drain(..) {
                            let _ = waiter.send(());
                        }
                    }
                    // Left while the SUBSCRIBE was on its way: unsubscribe it again.
                    None => self.mark(&user),
                }
            }
            Change::Unsubscribe(user) => {
                // Joined again while the UNSUBSCRIBE was on its way: its join marked it.
                debug_assert!(!self.users.contains_key(&user) || self.queued.contains(&user));
            }
        }
    }

    #[cfg(test)]
    /// Whether every wanted user is confirmed and nothing else is (nothing left to do).
    pub fn settled(&self) -> bool {
        if self.pattern {
            return self.pattern_confirmed && self.pattern_waiters.is_empty();
        }
        self.in_flight.is_none()
            && self.dirty.is_empty()
            && self.confirmed.len() == self.users.len()
            && self.users.keys().all(|u| self.confirmed.contains(u))
    }
}

#[cfg(test)]
mod tests {
    //! Random interleavings of sessions and Redis events, replayed from seeds. A simulated
    //! Redis applies the relay's changes (or loses the connection instead); at the end,
    //! with the link up and the relay run dry, Redis must hold exactly the users with
    //! sessions, and no session may be left waiting.

    use super::*;
    use crate::queue;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    struct World {
        book: Book,
        /// The channels the simulated Redis has on the current connection.
        redis: BTreeSet<String>,
        sessions: Vec<(String, u64, queue::Receiver<Delivery>)>,
        waiters: Vec<oneshot::Receiver<()>>,
        next_id: u64,
        /// A change sent to Redis whose answer has not been processed.
        sent: Option<Change>,
    }

    impl World {
        fn new() -> World {
            World {
                book: Book::new(false),
                redis: BTreeSet::new(),
                sessions: Vec::new(),
                waiters: Vec::new(),
                next_id: 1,
                sent: None,
            }
        }

        fn join(&mut self, user: String) {
            let (tx, rx) = queue::bounded(4, queue::one);
            let id = self.next_id;
            self.next_id += 1;
            if let Some(waiter) = self.book.join(&user, id, tx) {
                self.waiters.push(waiter);
            }
            self.sessions.push((user, id, rx));
        }

        fn leave(&mut self, index: usize) {
            let (user, id, _) = self.sessions.swap_remove(index);
            self.book.leave(&user, id);
        }

        /// The relay sends the next change to Redis (Redis applies it at once).
        fn send(&mut self) {
            if self.sent.is_some() {
                return;
            }
            if let Some(change) = self.book.next_change() {
                match &change {
                    Change::Subscribe(user) => {
                        self.redis.insert(user.clone());
                    }
                    Change::Unsubscribe(user) => {
                        self.redis.remove(user);
                    }
                    Change::SubscribePattern => unreachable!(),
                }
                self.sent = Some(change);
            }
        }

        /// The relay reads Redis's answer.
        fn answer(&mut self) {
            if self.sent.take().is_some() {
                self.book.change_done(true);
            }
        }

        fn lose_link(&mut self) {
            if self.sent.take().is_some() {
                self.book.change_done(false);
            }
            self.book.link_down();
            self.redis.clear(); // a closed connection's subscriptions are gone
        }

        fn relay_until_dry(&mut self) {
            for _ in 0..100_000 {
                self.send();
                if self.sent.is_none() {
                    return;
                }
                self.answer();
            }
            panic!("the relay never ran dry");
        }
    }

    fn run(seed: u64, steps: usize) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut world = World::new();
        world.book.link_up();
        for _ in 0..steps {
            match rng.random_range(0..100) {
                0..30 => world.join(format!("u{}", rng.random_range(0..6))),
                30..55 if !world.sessions.is_empty() => {
                    let i = rng.random_range(0..world.sessions.len());
                    world.leave(i);
                }
                // A slow consumer: the hub drops the session itself.
                55..62 if !world.sessions.is_empty() => {
                    let i = rng.random_range(0..world.sessions.len());
                    let (user, id, _) = &world.sessions[i];
                    let (user, id) = (user.clone(), *id);
                    world.book.leave(&user, id);
                    world.sessions.swap_remove(i);
                }
                62..80 => world.send(),
                80..95 => world.answer(),
                95..98 => world.lose_link(),
                _ if !world.book.is_link_up() => world.book.link_up(),
                _ => {}
            }
        }
        if !world.book.is_link_up() {
            world.book.link_up();
        }
        world.relay_until_dry();

        let wanted: BTreeSet<String> = world.sessions.iter().map(|(u, ..)| u.clone()).collect();
        assert_eq!(
            world.redis, wanted,
            "seed {seed}: Redis holds the wanted users"
        );
        assert!(world.book.settled(), "seed {seed}: the book is settled");
        assert_eq!(world.book.waiting(), 0, "seed {seed}: nobody waits");
        for mut waiter in world.waiters {
            // Answered (subscribed) or dropped (the user left): never pending.
            assert_ne!(
                waiter.try_recv(),
                Err(oneshot::error::TryRecvError::Empty),
                "seed {seed}: a session left waiting"
            );
        }
    }

    #[test]
    fn any_interleaving_ends_with_exactly_the_users_with_sessions_subscribed() {
        for seed in 0..2_000 {
            run(seed, 200);
        }
    }

    #[test]
    fn a_leave_racing_a_join_of_the_same_user_ends_subscribed() {
        // Tab reload: the old session leaves while the SUBSCRIBE of ... is in flight, and
        // the UNSUBSCRIBE of the old one is in flight when the new tab joins.
        let mut world = World::new();
        world.book.link_up();
        world.join("u".into());
        world.relay_until_dry();
        world.leave(0);
        world.send(); // UNSUBSCRIBE u on its way
        assert!(!world.redis.is_empty() || world.sent.is_some());
        world.join("u".into()); // the new tab, before Redis answered
        assert_eq!(
            world.book.waiting(),
            1,
            "the new tab waits for a new SUBSCRIBE"
        );
        world.answer();
        world.relay_until_dry();
        assert_eq!(world.redis, BTreeSet::from(["u".to_owned()]));
        assert_eq!(world.book.waiting(), 0);
    }

    #[test]
    fn a_users_last_session_dropped_as_slow_unsubscribes_it() {
        let mut world = World::new();
        world.book.link_up();
        world.join("u".into());
        world.relay_until_dry();
        let (user, id, _) = &world.sessions[0];
        let (user, id) = (user.clone(), *id);
        assert!(world.book.leave(&user, id), "the relay has work");
        world.sessions.clear();
        world.relay_until_dry();
        assert!(world.redis.is_empty());
    }

    #[test]
    fn a_new_connection_resubscribes_every_wanted_user_once() {
        let mut world = World::new();
        world.book.link_up();
        for user in ["a", "b", "a"] {
            world.join(user.into());
        }
        world.relay_until_dry();
        world.lose_link();
        assert_eq!(world.book.next_change(), None, "nothing is sent while down");
        world.book.link_up();
        let mut changes = Vec::new();
        while let Some(change) = world.book.next_change() {
            changes.push(change);
            world.book.change_done(true);
        }
        changes.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            changes,
            vec![Change::Subscribe("a".into()), Change::Subscribe("b".into())]
        );
    }
}
