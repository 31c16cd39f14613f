//! What keeps a user's view in sync across reconnects, tabs and instances: [`recovery`]
//! (the notifications missed while away, from the store, on a SUBSCRIBE with `last-id`)
//! and [`events`] (read-state events: the unread count and what changed, published on the
//! user's own channel to every session of the user on every instance).

pub mod events;
pub mod recovery;

use shared::inbox::Inbox;
use shared::time::Zone;

use events::Publisher;

/// The store and the event publisher, shared by the engine (STOMP) and the REST API.
#[derive(Clone)]
pub struct Sync {
    /// `None`: no database configured (no recovery, no snapshot, no read marks over STOMP).
    pub inbox: Option<Inbox>,
    pub events: Publisher,
    /// Most notifications one recovery sends (`WS_RECOVERY_MAX`).
    pub recovery_max: u32,
    /// The zone of `createdAt`/`readAt` in what the store yields.
    pub zone: Zone,
    /// Tests only: awaited around each recovery's query.
    pub recovery_hook: Option<recovery::Hook>,
}
