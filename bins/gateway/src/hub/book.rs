//! The hub's bookkeeping, pure: the sessions here and the Redis channels each listens to
//! (a user's channel, a broadcast channel), which channels the current Redis connection has
//! confirmed, and the one change in flight between the two. No I/O and no clock: the relay
//! task asks [`Book::next_change`] what to send Redis and reports the answer with
//! [`Book::change_done`], so any interleaving of sessions and Redis events can be replayed
//! in a test.
//!
//! Rules that keep "wanted", "confirmed" and Redis in agreement:
//! - Sessions never wait on the relay: joining, leaving and dropping a slow consumer only
//!   change the book and mark the channel dirty. The relay reconciles dirty channels one at
//!   a time, reading what is wanted *now*, so a leave racing a join (a tab reload) resolves
//!   to the latest state whatever their order.
//! - A channel counts as confirmed only after Redis acknowledged its SUBSCRIBE, and stops
//!   counting before its UNSUBSCRIBE is sent, so a join never mistakes a channel on its way
//!   out for a live one.
//! - A lost connection confirms nothing; the next connection starts from every wanted
//!   channel.
//! - A joining session that must wait for its channel's SUBSCRIBE gets a waiter, answered
//!   when the channel is confirmed (or dropped when the channel is no longer wanted).
//! - Pattern mode: channels under the pattern's prefix need no SUBSCRIBE of their own; they
//!   are live once the one `PSUBSCRIBE` is confirmed.
//! - Pub/Sub is at-most-once: a user channel whose subscription was lost (the connection
//!   went, or a cluster shard dropped it) while sessions listened has a gap. When its
//!   subscription is confirmed again, [`Book::change_done`] names it, so its sessions can
//!   recover the gap from the store.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio::sync::oneshot;

use super::{Delivery, Source};
use crate::queue;

/// A session: its queue and the channels it listens to.
struct Member {
    sender: queue::Sender<Delivery>,
    channels: Vec<String>,
}

/// A channel's listeners and the sessions waiting for its subscription.
struct Channel {
    source: Source,
    members: HashSet<u64>,
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
    /// Pattern mode: the prefix the `PSUBSCRIBE` covers.
    covered: Option<String>,
    sessions: HashMap<u64, Member>,
    channels: HashMap<String, Channel>,
    /// Channels the current connection has confirmed (outside the pattern).
    confirmed: HashSet<String>,
    /// Pattern mode: the `PSUBSCRIBE` is confirmed.
    pattern_confirmed: bool,
    /// Pattern mode: sessions waiting for the `PSUBSCRIBE`.
    pattern_waiters: Vec<oneshot::Sender<()>>,
    /// User channels whose subscription was lost while wanted: messages may be missing.
    gapped: HashSet<String>,
    /// Channels whose wanted and confirmed states may differ, oldest first, each once.
    dirty: VecDeque<String>,
    queued: HashSet<String>,
    link_up: bool,
    in_flight: Option<Change>,
}

impl Book {
    /// An empty book; `covered`: pattern mode, the channel prefix its `PSUBSCRIBE` covers.
    pub fn new(covered: Option<String>) -> Book {
        Book {
            covered,
            sessions: HashMap::new(),
            channels: HashMap::new(),
            confirmed: HashSet::new(),
            pattern_confirmed: false,
            pattern_waiters: Vec::new(),
            gapped: HashSet::new(),
            dirty: VecDeque::new(),
            queued: HashSet::new(),
            link_up: false,
            in_flight: None,
        }
    }

    fn is_covered(&self, channel: &str) -> bool {
        self.covered
            .as_deref()
            .is_some_and(|prefix| channel.starts_with(prefix))
    }

    /// Adds session `id` of `channel` (registering the session with `sender` the first
    /// time). `None`: its messages already flow; `Some(waiter)`: they flow once the waiter
    /// is answered.
    pub fn join(
        &mut self,
        channel: &str,
        source: Source,
        id: u64,
        sender: impl FnOnce() -> queue::Sender<Delivery>,
    ) -> Option<oneshot::Receiver<()>> {
        let member = self.sessions.entry(id).or_insert_with(|| Member {
            sender: sender(),
            channels: Vec::new(),
        });
        if !member.channels.iter().any(|c| c == channel) {
            // Exact: a session listens to one or two channels.
            member.channels.reserve_exact(1);
            member.channels.push(channel.to_owned());
        }
        let covered = self.is_covered(channel);
        let entry = self
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| Channel {
                source,
                members: HashSet::new(),
                waiters: Vec::new(),
            });
        entry.members.insert(id);
        if covered {
            if self.pattern_confirmed {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            self.pattern_waiters.push(tx);
            return Some(rx);
        }
        if self.confirmed.contains(channel) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        entry.waiters.push(tx);
        self.mark(channel);
        Some(rx)
    }

    /// Removes session `id` from `channel` (idempotent); the session's queue stays open
    /// while it listens to another channel. Returns whether the relay has work to do.
    pub fn leave(&mut self, channel: &str, id: u64) -> bool {
        if let Some(member) = self.sessions.get_mut(&id) {
            member.channels.retain(|c| c != channel);
            if member.channels.is_empty() {
                self.sessions.remove(&id);
            }
        }
        self.release(channel, id)
    }

    /// Removes session `id` from every channel and closes its queue (a slow consumer: the
    /// session sees its inbox end). Returns whether the relay has work to do.
    pub fn drop_session(&mut self, id: u64) -> bool {
        let Some(member) = self.sessions.remove(&id) else {
            return false;
        };
        let mut work = false;
        for channel in &member.channels {
            work |= self.release(channel, id);
        }
        work
    }

    fn release(&mut self, channel: &str, id: u64) -> bool {
        let Some(entry) = self.channels.get_mut(channel) else {
            return false;
        };
        if !entry.members.remove(&id) || !entry.members.is_empty() {
            return false;
        }
        // The channel's last session: its waiters (none can be left) go with it.
        self.channels.remove(channel);
        self.gapped.remove(channel);
        if self.is_covered(channel) {
            return false;
        }
        self.mark(channel);
        true
    }

    /// Where messages of `channel` come from, and the queues of its sessions.
    pub fn listeners(
        &self,
        channel: &str,
    ) -> Option<(
        Source,
        impl Iterator<Item = (u64, &queue::Sender<Delivery>)>,
    )> {
        let entry = self.channels.get(channel)?;
        let sessions = &self.sessions;
        Some((
            entry.source,
            entry
                .members
                .iter()
                .filter_map(move |id| sessions.get(id).map(|m| (*id, &m.sender))),
        ))
    }

    /// Channels confirmed on the current connection (the pattern counts as one).
    pub fn confirmed(&self) -> usize {
        self.confirmed.len() + usize::from(self.pattern_confirmed)
    }

    /// Sessions waiting for a subscription.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.pattern_waiters.len()
            + self
                .channels
                .values()
                .map(|c| c.waiters.len())
                .sum::<usize>()
    }

    fn mark(&mut self, channel: &str) {
        if self.queued.insert(channel.to_owned()) {
            self.dirty.push_back(channel.to_owned());
        }
    }

    /// A new Redis connection: nothing is confirmed on it yet; every wanted channel is due.
    pub fn link_up(&mut self) {
        self.link_up = true;
        self.in_flight = None;
        self.confirmed.clear();
        self.pattern_confirmed = false;
        self.dirty.clear();
        self.queued.clear();
        let channels: Vec<String> = self
            .channels
            .keys()
            .filter(|c| !self.is_covered(c))
            .cloned()
            .collect();
        for channel in channels {
            self.mark(&channel);
        }
    }

    /// The connection is gone: whatever it had confirmed is gone with it, and the user
    /// channels it carried have a gap.
    pub fn link_down(&mut self) {
        self.link_up = false;
        self.in_flight = None;
        let gapped: Vec<String> = self
            .channels
            .iter()
            .filter(|(name, channel)| {
                channel.source == Source::User
                    && (self.confirmed.contains(*name)
                        || (self.pattern_confirmed && self.is_covered(name)))
            })
            .map(|(name, _)| name.clone())
            .collect();
        self.gapped.extend(gapped);
        self.confirmed.clear();
        self.pattern_confirmed = false;
    }

    /// Redis dropped `channel`'s subscription on its own (a cluster slot moved to another
    /// shard): it is due again, with a gap. Returns whether the relay has work to do.
    pub fn lost(&mut self, channel: &str) -> bool {
        let Some(entry) = self.channels.get(channel) else {
            return false;
        };
        if !self.confirmed.remove(channel) {
            return false;
        }
        if entry.source == Source::User {
            self.gapped.insert(channel.to_owned());
        }
        self.mark(channel);
        true
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
        if self.covered.is_some() && !self.pattern_confirmed {
            self.in_flight = Some(Change::SubscribePattern);
            return self.in_flight.clone();
        }
        while let Some(channel) = self.dirty.pop_front() {
            self.queued.remove(&channel);
            let wanted = self.channels.contains_key(&channel);
            let confirmed = self.confirmed.contains(&channel);
            let change = match (wanted, confirmed) {
                (true, false) => Change::Subscribe(channel),
                (false, true) => {
                    // Not confirmed from now on: a join meanwhile waits for a new SUBSCRIBE.
                    self.confirmed.remove(&channel);
                    Change::Unsubscribe(channel)
                }
                _ => continue,
            };
            self.in_flight = Some(change.clone());
            return Some(change);
        }
        None
    }

    /// Redis answered the change in flight: `ok`, or the connection failed (then call
    /// [`Book::link_down`]). Returns the channels that are live again after a gap.
    pub fn change_done(&mut self, ok: bool) -> Vec<String> {
        let Some(change) = self.in_flight.take() else {
            return Vec::new();
        };
        if !ok {
            return Vec::new();
        }
        match change {
            Change::SubscribePattern => {
                self.pattern_confirmed = true;
                for waiter in std::mem::take(&mut self.pattern_waiters) {
                    let _ = waiter.send(());
                }
                let covered: Vec<String> = self
                    .gapped
                    .iter()
                    .filter(|c| self.is_covered(c))
                    .cloned()
                    .collect();
                for channel in &covered {
                    self.gapped.remove(channel);
                }
                covered
            }
            Change::Subscribe(channel) => {
                self.confirmed.insert(channel.clone());
                match self.channels.get_mut(&channel) {
                    Some(entry) => {
                        // Taken, not drained: the channel keeps no capacity it rarely needs.
                        for waiter in std::mem::take(&mut entry.waiters) {
                            let _ = waiter.send(());
                        }
                    }
                    // Released while the SUBSCRIBE was on its way: unsubscribe it again.
                    None => self.mark(&channel),
                }
                if self.gapped.remove(&channel) {
                    vec![channel]
                } else {
                    Vec::new()
                }
            }
            // Joined again while the UNSUBSCRIBE was on its way: that join marked it.
            Change::Unsubscribe(_) => Vec::new(),
        }
    }

    /// Whether every wanted channel is confirmed and nothing else is (nothing left to do).
    #[cfg(test)]
    pub fn settled(&self) -> bool {
        let uncovered = self.channels.keys().filter(|c| !self.is_covered(c));
        self.in_flight.is_none()
            && self.dirty.is_empty()
            && (self.covered.is_none() || self.pattern_confirmed)
            && self.confirmed.len() == uncovered.clone().count()
            && uncovered.into_iter().all(|c| self.confirmed.contains(c))
    }
}

#[cfg(test)]
mod tests {
    //! Random interleavings of sessions and Redis events, replayed from seeds. A simulated
    //! Redis applies the relay's changes (or loses the connection instead); at the end,
    //! with the link up and the relay run dry, Redis must hold exactly the channels some
    //! session listens to, and no session may be left waiting.

    use super::*;
    use crate::queue;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    /// The pattern mode's prefix: user channels start with it, the broadcast channel not.
    const USERS: &str = "u";
    const BROADCAST: &str = "b:timedeals";

    struct Session {
        id: u64,
        channels: Vec<String>,
        _inbox: queue::Receiver<Delivery>,
        sender: queue::Sender<Delivery>,
    }

    struct World {
        book: Book,
        pattern: bool,
        /// The channels the simulated Redis has on the current connection.
        redis: BTreeSet<String>,
        sessions: Vec<Session>,
        waiters: Vec<oneshot::Receiver<()>>,
        next_id: u64,
        /// A change sent to Redis whose answer has not been processed.
        sent: Option<Change>,
        /// User channels that were live when their subscription was lost, still wanted:
        /// their sessions are owed a recovery once the channel is live again.
        owed: BTreeSet<String>,
    }

    impl World {
        fn new(pattern: bool) -> World {
            World {
                book: Book::new(pattern.then(|| USERS.to_owned())),
                pattern,
                redis: BTreeSet::new(),
                sessions: Vec::new(),
                waiters: Vec::new(),
                next_id: 1,
                sent: None,
                owed: BTreeSet::new(),
            }
        }

        fn open(&mut self) -> usize {
            let (sender, inbox) = queue::bounded(4, queue::one);
            self.sessions.push(Session {
                id: self.next_id,
                channels: Vec::new(),
                _inbox: inbox,
                sender,
            });
            self.next_id += 1;
            self.sessions.len() - 1
        }

        fn join(&mut self, index: usize, channel: &str) {
            let session = &mut self.sessions[index];
            let sender = session.sender.clone();
            let source = if channel == BROADCAST {
                Source::Broadcast
            } else {
                Source::User
            };
            let waiter = self.book.join(channel, source, session.id, move || sender);
            if !session.channels.iter().any(|c| c == channel) {
                session.channels.push(channel.to_owned());
            }
            self.waiters.extend(waiter);
        }

        fn leave(&mut self, index: usize, channel: usize) {
            let session = &mut self.sessions[index];
            if session.channels.is_empty() {
                return;
            }
            let channel = session.channels.remove(channel % session.channels.len());
            self.book.leave(&channel, session.id);
            self.forget_unwanted();
        }

        /// A slow consumer: the hub drops the session from every channel.
        fn drop_session(&mut self, index: usize) {
            let session = self.sessions.swap_remove(index);
            self.book.drop_session(session.id);
            self.forget_unwanted();
        }

        /// A channel nobody listens to any more is owed nothing.
        fn forget_unwanted(&mut self) {
            let listened: BTreeSet<&String> =
                self.sessions.iter().flat_map(|s| &s.channels).collect();
            self.owed.retain(|c| listened.contains(c));
        }

        /// The channels this connection has live (sent and answered) for sessions.
        fn live_user_channels(&self) -> BTreeSet<String> {
            let pattern_live = self.redis.contains(&format!("{USERS}*"))
                && self.sent != Some(Change::SubscribePattern);
            self.sessions
                .iter()
                .flat_map(|s| s.channels.iter())
                .filter(|c| c.starts_with(USERS))
                .filter(|c| {
                    let answered = self.sent != Some(Change::Subscribe((*c).clone()));
                    (self.redis.contains(*c) && answered) || pattern_live
                })
                .cloned()
                .collect()
        }

        fn recovered(&mut self, channels: Vec<String>) {
            for channel in channels {
                assert!(
                    self.owed.remove(&channel),
                    "{channel} recovered but owed nothing"
                );
            }
        }

        /// Redis drops one live channel on its own (a cluster slot moved).
        fn lose_channel(&mut self, pick: usize) {
            let live: Vec<String> = self
                .live_user_channels()
                .into_iter()
                .filter(|c| self.redis.contains(c))
                .collect();
            if live.is_empty() {
                return;
            }
            let channel = &live[pick % live.len()];
            self.redis.remove(channel);
            self.owed.insert(channel.clone());
            self.book.lost(channel);
        }

        /// The relay sends the next change to Redis (Redis applies it at once).
        fn send(&mut self) {
            if self.sent.is_some() {
                return;
            }
            if let Some(change) = self.book.next_change() {
                match &change {
                    Change::Subscribe(channel) => {
                        self.redis.insert(channel.clone());
                    }
                    Change::Unsubscribe(channel) => {
                        self.redis.remove(channel);
                    }
                    Change::SubscribePattern => {
                        self.redis.insert(format!("{USERS}*"));
                    }
                }
                self.sent = Some(change);
            }
        }

        /// The relay reads Redis's answer.
        fn answer(&mut self) {
            if self.sent.take().is_some() {
                let recovered = self.book.change_done(true);
                self.recovered(recovered);
            }
        }

        fn lose_link(&mut self) {
            let live = self.live_user_channels();
            self.owed.extend(live);
            if self.sent.take().is_some() {
                assert!(self.book.change_done(false).is_empty());
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

        /// What Redis must hold: every channel a session listens to (outside the pattern).
        fn wanted(&self) -> BTreeSet<String> {
            let mut wanted: BTreeSet<String> = self
                .sessions
                .iter()
                .flat_map(|s| s.channels.iter().cloned())
                .filter(|c| !(self.pattern && c.starts_with(USERS)))
                .collect();
            if self.pattern {
                wanted.insert(format!("{USERS}*"));
            }
            wanted
        }
    }

    fn run(seed: u64, steps: usize, pattern: bool) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut world = World::new(pattern);
        world.book.link_up();
        for _ in 0..steps {
            let sessions = world.sessions.len();
            match rng.random_range(0..100) {
                0..20 => {
                    let index = world.open();
                    world.join(index, &format!("{USERS}{}", rng.random_range(0..6)));
                }
                20..28 if sessions > 0 => world.join(rng.random_range(0..sessions), BROADCAST),
                28..50 if sessions > 0 => {
                    let channel = rng.random_range(0..2);
                    world.leave(rng.random_range(0..sessions), channel);
                }
                50..60 if sessions > 0 => world.drop_session(rng.random_range(0..sessions)),
                60..78 => world.send(),
                78..95 => world.answer(),
                95..97 => world.lose_link(),
                97 if !pattern => world.lose_channel(rng.random_range(0..8)),
                _ if !world.book.is_link_up() => world.book.link_up(),
                _ => {}
            }
        }
        if !world.book.is_link_up() {
            world.book.link_up();
        }
        world.relay_until_dry();

        assert_eq!(
            world.redis,
            world.wanted(),
            "seed {seed}: Redis holds the wanted channels"
        );
        assert!(world.book.settled(), "seed {seed}: the book is settled");
        assert!(
            world.owed.is_empty(),
            "seed {seed}: channels whose gap was never reported: {:?}",
            world.owed
        );
        assert_eq!(world.book.waiting(), 0, "seed {seed}: nobody waits");
        for mut waiter in world.waiters {
            // Answered (subscribed) or dropped (the channel was released): never pending.
            assert_ne!(
                waiter.try_recv(),
                Err(oneshot::error::TryRecvError::Empty),
                "seed {seed}: a session left waiting"
            );
        }
    }

    #[test]
    fn any_interleaving_ends_with_exactly_the_wanted_channels_subscribed() {
        for seed in 0..2_000 {
            run(seed, 200, false);
        }
    }

    #[test]
    fn any_interleaving_in_pattern_mode_ends_with_the_pattern_and_the_broadcast() {
        for seed in 0..1_000 {
            run(seed, 200, true);
        }
    }

    #[test]
    fn a_leave_racing_a_join_of_the_same_channel_ends_subscribed() {
        // Tab reload: the old tab's UNSUBSCRIBE is on its way when the new tab joins.
        let mut world = World::new(false);
        world.book.link_up();
        let old = world.open();
        world.join(old, "u1");
        world.relay_until_dry();
        world.leave(old, 0);
        world.send();
        assert!(matches!(world.sent, Some(Change::Unsubscribe(_))));
        let new = world.open();
        world.join(new, "u1"); // before Redis answered
        assert_eq!(
            world.book.waiting(),
            1,
            "the new tab waits for a new SUBSCRIBE"
        );
        world.answer();
        world.relay_until_dry();
        assert_eq!(world.redis, BTreeSet::from(["u1".to_owned()]));
        assert_eq!(world.book.waiting(), 0);
    }

    #[test]
    fn a_slow_consumer_is_dropped_from_every_channel_and_its_queue_closes() {
        let mut world = World::new(false);
        world.book.link_up();
        let index = world.open();
        world.join(index, "u1");
        world.join(index, BROADCAST);
        world.relay_until_dry();
        let session = world.sessions.swap_remove(index);
        drop(session.sender); // the test's own handle
        assert!(world.book.drop_session(session.id), "the relay has work");
        world.relay_until_dry();
        assert!(world.redis.is_empty(), "{:?}", world.redis);
        let mut inbox = session._inbox;
        assert!(inbox.try_recv().is_none());
        assert!(
            tokio_test_block_on(inbox.recv()).is_none(),
            "the session's inbox has ended"
        );
    }

    fn tokio_test_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_new_connection_resubscribes_every_wanted_channel_once() {
        let mut world = World::new(false);
        world.book.link_up();
        for channel in ["a", "b", "a"] {
            let index = world.open();
            world.join(index, channel);
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
