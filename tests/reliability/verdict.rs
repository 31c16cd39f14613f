//! The verdict on a stream: what should exist (one row per distinct identity among the
//! acknowledged events, one broadcast per time deal), what the database holds and what
//! Redis carried; lost, duplicated, unpublished; latencies; and how long after a moment
//! (a kill, a restore) everything sent before it had been published.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::observe::{Heard, Recorder};
use super::report::{Check, Findings};
use super::services::StoredRow;
use super::stream::{Event, Identity, Produced};

/// How often the drain looks at what was heard.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// What the stream should have produced.
pub struct Expected {
    /// Each identity of an acknowledged event, with the first instant one was sent.
    pub first_sent: HashMap<Identity, Instant>,
    /// The index of each identity's first acknowledged event.
    pub first_event: HashMap<Identity, usize>,
    /// Identities of events the broker did not acknowledge (they may exist or not).
    pub uncertain: HashSet<Identity>,
    pub sent: usize,
    pub acked: usize,
    pub copies: usize,
    /// Events the broker acknowledged at an offset it does not hold: lost before ingest
    /// could read them, so not expected of it.
    pub dropped_by_broker: usize,
}

impl Expected {
    /// What `events` should have become; `held` is every (topic, partition, offset) the
    /// broker holds ([`super::observe::held_records`]).
    pub fn new(
        events: &[Event],
        produced: &Produced,
        held: &HashSet<(String, i32, i64)>,
    ) -> Expected {
        let mut first_sent: HashMap<Identity, Instant> = HashMap::new();
        let mut first_event = HashMap::new();
        let mut uncertain = HashSet::new();
        let mut dropped_by_broker = 0;
        for (n, (event, sent_at)) in events.iter().zip(&produced.sent_at).enumerate() {
            let on_broker = |(partition, offset): (i32, i64)| {
                held.contains(&(event.topic.to_owned(), partition, offset))
            };
            match (sent_at, produced.acked[n]) {
                (Some(_), Some(at)) if !on_broker(at) => {
                    dropped_by_broker += 1;
                    uncertain.insert(event.identity.clone());
                }
                (Some(at), Some(_)) => {
                    let first = first_sent.entry(event.identity.clone()).or_insert(*at);
                    *first = (*first).min(*at);
                    first_event.entry(event.identity.clone()).or_insert(n);
                }
                _ => {
                    uncertain.insert(event.identity.clone());
                }
            }
        }
        Expected {
            sent: produced.sent_at.iter().flatten().count(),
            acked: produced.acked.iter().flatten().count(),
            copies: events.iter().filter(|e| e.copy).count(),
            dropped_by_broker,
            uncertain,
            first_sent,
            first_event,
        }
    }

    pub fn rows(&self) -> usize {
        self.first_sent
            .keys()
            .filter(|i| matches!(i, Identity::Row { .. }))
            .count()
    }

    pub fn deals(&self) -> usize {
        self.first_sent.len() - self.rows()
    }
}

/// The first instant each identity was heard on Redis.
pub fn first_heard(recorder: &Recorder) -> HashMap<Identity, Instant> {
    recorder.with(|log| {
        let mut first = HashMap::new();
        for (at, heard) in log {
            let identity = match heard {
                Heard::Row { identity, .. } => identity.clone(),
                Heard::Deal(id) => Identity::Deal(*id),
                Heard::Other => continue,
            };
            first.entry(identity).or_insert(*at);
        }
        first
    })
}

/// Waits until every expected identity was heard, at most `timeout`; the instant it was
/// complete, `None` when it was not in time.
pub async fn drain(expected: &Expected, recorder: &Recorder, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    let mut missing: HashSet<&Identity> = expected.first_sent.keys().collect();
    let mut seen = 0;
    loop {
        recorder.with(|log| {
            for (_, heard) in &log[seen..] {
                match heard {
                    Heard::Row { identity, .. } => missing.remove(identity),
                    Heard::Deal(id) => missing.remove(&Identity::Deal(*id)),
                    Heard::Other => false,
                };
            }
            seen = log.len();
        });
        if missing.is_empty() {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// How long after `at` every identity first sent before `at` had been heard (zero when all
/// were heard before it); `None` when one never was.
pub fn caught_up(
    expected: &Expected,
    heard: &HashMap<Identity, Instant>,
    at: Instant,
) -> Option<Duration> {
    let mut longest = Duration::ZERO;
    for (identity, sent) in &expected.first_sent {
        if *sent >= at {
            continue;
        }
        longest = longest.max(heard.get(identity)?.saturating_duration_since(at));
    }
    Some(longest)
}

/// Sent → first heard of every identity that was heard, sorted.
pub fn latencies(expected: &Expected, heard: &HashMap<Identity, Instant>) -> Vec<Duration> {
    let mut out: Vec<Duration> = expected
        .first_sent
        .iter()
        .filter_map(|(identity, sent)| Some(heard.get(identity)?.saturating_duration_since(*sent)))
        .collect();
    out.sort();
    out
}

/// The `q` quantile of sorted `values` (zero when empty).
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Lost, duplicated, unexpected and unpublished, from the rows and what Redis carried.
#[derive(Debug, Default)]
pub struct Tally {
    pub expected_rows: usize,
    pub expected_deals: usize,
    pub rows: usize,
    pub missing: usize,
    /// The expected identities without a row.
    pub missing_identities: Vec<Identity>,
    pub duplicated: usize,
    pub unexpected: usize,
    /// Rows of events the broker did not acknowledge.
    pub uncertain_rows: usize,
    pub unpublished: usize,
    pub publishes: usize,
    pub repeated_publishes: usize,
    /// Published ids that are no row.
    pub unknown_ids: usize,
    pub deals_missing: usize,
    pub repeated_deals: usize,
}

impl Tally {
    pub fn new(expected: &Expected, rows: &[StoredRow], recorder: &Recorder) -> Tally {
        let mut stored: HashMap<&Identity, usize> = HashMap::new();
        for row in rows {
            *stored.entry(&row.identity).or_default() += 1;
        }
        let expected_rows: HashSet<&Identity> = expected
            .first_sent
            .keys()
            .filter(|i| matches!(i, Identity::Row { .. }))
            .collect();
        let mut missing_identities: Vec<Identity> = expected_rows
            .iter()
            .filter(|i| !stored.contains_key(*i))
            .map(|i| (*i).clone())
            .collect();
        missing_identities.sort();
        let mut tally = Tally {
            expected_rows: expected_rows.len(),
            expected_deals: expected.deals(),
            rows: rows.len(),
            missing: missing_identities.len(),
            missing_identities,
            duplicated: stored.values().map(|n| n - 1).sum(),
            ..Tally::default()
        };
        for identity in stored.keys() {
            if !expected_rows.contains(identity) {
                if expected.uncertain.contains(*identity) {
                    tally.uncertain_rows += 1;
                } else {
                    tally.unexpected += 1;
                }
            }
        }
        let ids: HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let mut published: HashSet<i64> = HashSet::new();
        let mut deals: HashMap<i64, usize> = HashMap::new();
        recorder.with(|log| {
            for (_, heard) in log {
                match heard {
                    Heard::Row { id, .. } => {
                        tally.publishes += 1;
                        if !published.insert(*id) {
                            tally.repeated_publishes += 1;
                        }
                    }
                    Heard::Deal(id) => *deals.entry(*id).or_default() += 1,
                    Heard::Other => {}
                }
            }
        });
        tally.unpublished = ids.difference(&published).count();
        tally.unknown_ids = published.difference(&ids).count();
        tally.deals_missing = expected
            .first_sent
            .keys()
            .filter(|i| matches!(i, Identity::Deal(id) if !deals.contains_key(id)))
            .count();
        tally.repeated_deals = deals.values().map(|n| n - 1).sum();
        tally
    }

    /// The figures and checks every stream case reports.
    pub fn report(
        &self,
        expected: &Expected,
        produced: &Produced,
        dead_letters: i64,
        out: &mut Findings,
    ) {
        let n = |v: usize| v as f64;
        out.figure("events produced", n(expected.sent), "events");
        out.figure("offered rate", produced.offered_rate().round(), "events/s");
        out.figure(
            "deliberate copies (same identity again)",
            n(expected.copies),
            "events",
        );
        out.figure(
            "distinct notifications expected",
            n(self.expected_rows),
            "rows",
        );
        out.figure("rows stored", n(self.rows), "rows");
        out.figure("time deals expected", n(self.expected_deals), "broadcasts");
        out.figure("publishes of rows", n(self.publishes), "messages");
        out.figure(
            "repeated publishes (at-least-once, allowed)",
            n(self.repeated_publishes),
            "messages",
        );
        out.figure(
            "repeated time-deal broadcasts (allowed)",
            n(self.repeated_deals),
            "messages",
        );
        out.figure("dead-lettered", dead_letters as f64, "records");
        out.figure(
            "acknowledged at an offset the broker's log lacks at the end (not held against ingest)",
            n(expected.dropped_by_broker),
            "events",
        );
        if self.uncertain_rows > 0 {
            out.figure(
                "rows of such or unacknowledged events (ingest had read them)",
                n(self.uncertain_rows),
                "rows",
            );
        }
        if expected.dropped_by_broker > 0 {
            out.note(format!(
                "the broker acknowledged {} event(s) at offsets its log does not hold when \
                 read back after the stream ({} row(s) show that ingest had read some of \
                 them). tansu 0.6 with memory storage does this without ingest too: 7 of \
                 20 000 records produced at 2 000/s and read back here were missing. Those \
                 events are not held against ingest",
                expected.dropped_by_broker, self.uncertain_rows
            ));
        }
        out.check(Check::none(
            "events the broker did not acknowledge",
            produced.failures,
        ));
        out.check(Check::none(
            "lost (expected notification without a row)",
            self.missing,
        ));
        out.check(Check::none(
            "duplicated rows (an identity stored twice)",
            self.duplicated,
        ));
        out.check(Check::none("rows no event asked for", self.unexpected));
        out.check(Check::none("rows never published", self.unpublished));
        out.check(Check::none(
            "published ids that are no row",
            self.unknown_ids,
        ));
        out.check(Check::none(
            "time deals never broadcast",
            self.deals_missing,
        ));
        out.check(Check::none(
            "dead-lettered records",
            dead_letters.max(0) as usize,
        ));
    }
}

/// Notes on the first few lost notifications: their event's record (topic, partition,
/// offset), when it was sent, and whether the broker still holds it with the same bytes.
pub async fn explain_missing(
    tally: &Tally,
    expected: &Expected,
    events: &[Event],
    produced: &Produced,
    bootstrap: &str,
) -> Vec<String> {
    let mut notes = Vec::new();
    for identity in tally.missing_identities.iter().take(5) {
        let Some(&n) = expected.first_event.get(identity) else {
            continue;
        };
        let event = &events[n];
        let Some((partition, offset)) = produced.acked[n] else {
            continue;
        };
        let sent = produced.sent_at[n].map_or(0.0, |at| (at - produced.started).as_secs_f64());
        let held = match super::observe::record_at(bootstrap, event.topic, partition, offset).await
        {
            Ok(Some(value)) if value == event.value => "the broker holds it unchanged",
            Ok(Some(_)) => "the broker holds other bytes there",
            Ok(None) => "the broker does not return it",
            Err(_) => "the broker could not be asked",
        };
        notes.push(format!(
            "lost: {identity:?} from {}:{partition}:{offset} (key {}), sent {sent:.2} s into \
             the stream; {held}",
            event.topic, event.key
        ));
    }
    notes
}
