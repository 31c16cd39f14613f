//! What one session listens to: the hub channels it joined (the user's own channel for its
//! notification and state subscriptions, the time-deal channel for `/topic/timedeals`),
//! its inbox, and what a recovery sent. Subscribing joins the channel first (Redis
//! confirms it), then recovers from the store or sends the state SNAPSHOT, so nothing falls
//! between the store and the live stream.

use shared::channel::{Channels, TIMEDEALS, is_state_event};
use shared::inbox::{Inbox as Store, InboxError};
use tokio::time::Instant;

use super::{End, send};
use crate::destination::Target;
use crate::hub::{Delivery, Inbox, Source};
use crate::outlet::Outlet;
use crate::session::Session;
use crate::state::AppState;
use crate::sync::events::StateEvent;
use crate::sync::recovery::{Phase, Recent, TRUNCATED_HEADER, leading_id};

/// The session's channels and inbox; empty (and small) until it subscribes.
pub(super) struct Listening {
    /// The session's id in the hub.
    id: u64,
    pub inbox: Option<Inbox>,
    personal: Option<String>,
    broadcast: Option<String>,
    recent: Option<Box<Recent>>,
    /// Subscribed with `last-id`: the newest notification id the client holds, so a gap
    /// in the Redis subscription is recovered from there.
    newest: Option<i64>,
}

/// Why subscribing did not complete.
pub(super) enum Failed {
    /// The connection is over.
    End(End),
    /// The client gets an ERROR with this message, then the connection closes.
    Error(&'static str),
}

impl Listening {
    pub fn new(id: u64) -> Listening {
        Listening {
            id,
            inbox: None,
            personal: None,
            broadcast: None,
            recent: None,
            newest: None,
        }
    }

    /// The session subscribed `subscription` to `target`: join its channel and
    /// send what the subscription starts with.
    pub async fn subscribe(
        &mut self,
        app: &AppState,
        session: &mut Session,
        to_client: &Outlet,
        subscription: &str,
        target: Target,
        last_id: Option<i64>,
    ) -> Result<(), Failed> {
        let user = session.user().map(str::to_owned);
        let (slot, channel, source) = match (target.is_personal(), &user) {
            (true, Some(user)) => {
                if !Channels::is_user_id(user) {
                    return Err(Failed::Error("Invalid user id"));
                }
                (
                    &mut self.personal,
                    app.channels.for_user(user),
                    Source::User,
                )
            }
            (true, None) => return Err(Failed::Error("Authentication required")),
            (false, _) => (
                &mut self.broadcast,
                app.channels.broadcast(TIMEDEALS),
                Source::Broadcast,
            ),
        };
        if slot.is_none() {
            let created = app.hub.join(&channel, source, self.id).await;
            *slot = Some(channel);
            match (created, &self.inbox) {
                (Some(inbox), None) => self.inbox = Some(inbox),
                // The hub dropped this session's queue (a slow consumer) meanwhile.
                (Some(_), Some(_)) => return Err(Failed::End(End::SlowConsumer)),
                (None, _) => {}
            }
        }
        let (Some(user), Some(inbox)) = (user, app.sync.inbox.as_ref()) else {
            // Without the store there is nothing to recover and no count to show.
            return Ok(());
        };
        match (target, last_id) {
            (Target::Notifications, Some(last_id)) => {
                self.newest = Some(last_id);
                self.recover(app, session, to_client, &user, inbox, last_id)
                    .await?;
            }
            (Target::State, _) => {
                let unread = inbox
                    .unread_count(&user)
                    .await
                    .map_err(failed("snapshot"))?;
                let json = StateEvent::Snapshot { unread }.to_json();
                let index = session
                    .subscriptions()
                    .iter()
                    .position(|s| s.id == subscription);
                if let Some(index) = index {
                    let text = session.message_text(index, &json);
                    send(to_client, text, app.limits.send_timeout)
                        .await
                        .map_err(Failed::End)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends the user's notifications with `id > last_id` (the newest `recovery_max`,
    /// oldest first) and remembers them, so their live copies are not sent again.
    async fn recover(
        &mut self,
        app: &AppState,
        session: &mut Session,
        to_client: &Outlet,
        user: &str,
        inbox: &Store,
        last_id: i64,
    ) -> Result<(), Failed> {
        let hook = app.sync.recovery_hook.as_ref();
        if let Some(hook) = hook {
            hook.reached(Phase::BeforeQuery).await;
        }
        let found = inbox
            .since(user, last_id, app.sync.recovery_max.saturating_add(1))
            .await;
        let rows = found.map_err(failed("recovery"))?;
        if let Some(hook) = hook {
            hook.reached(Phase::AfterQuery).await;
        }
        let truncated = rows.len() > app.sync.recovery_max as usize;
        let rows = &rows[rows.len().saturating_sub(app.sync.recovery_max as usize)..];
        app.metrics.recoveries.inc();
        app.metrics.recovered.inc_by(rows.len() as u64);
        if truncated {
            app.metrics.recoveries_truncated.inc();
        }
        let now = Instant::now();
        let mut ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        if let Some(recent) = self.recent.take().filter(|r| !r.expired(now)) {
            // A recovery after a gap: what an earlier one sent is still recognised.
            ids.extend(recent.ids());
        }
        for (n, row) in rows.iter().enumerate() {
            let json = row.to_json(&app.sync.zone);
            let extra = (n == 0 && truncated).then_some(TRUNCATED_HEADER);
            self.send_to(session, to_client, app, Target::Notifications, &json, extra)
                .await
                .map_err(Failed::End)?;
            self.newest = self.newest.max(Some(row.id));
        }
        self.recent = Some(Box::new(Recent::new(ids, now)));
        Ok(())
    }

    /// The user channel's Redis subscription had a gap: a session that subscribed with
    /// `last-id` recovers what was published meanwhile; others go on live.
    async fn recover_gap(
        &mut self,
        app: &AppState,
        session: &mut Session,
        to_client: &Outlet,
    ) -> Result<(), End> {
        let (Some(newest), Some(user), Some(inbox)) = (
            self.newest,
            session.user().map(str::to_owned),
            app.sync.inbox.clone(),
        ) else {
            return Ok(());
        };
        if !session
            .subscriptions()
            .iter()
            .any(|s| s.target == Target::Notifications)
        {
            return Ok(());
        }
        match self
            .recover(app, session, to_client, &user, &inbox, newest)
            .await
        {
            Ok(()) => Ok(()),
            Err(Failed::End(end)) => Err(end),
            // The store is away too: live delivery goes on; the client's next reconnect
            // with last-id recovers the rest.
            Err(Failed::Error(_)) => Ok(()),
        }
    }

    /// A subscription ended: leave the channels no remaining subscription needs.
    pub fn unsubscribed(&mut self, app: &AppState, session: &Session) {
        let remaining = session.subscriptions();
        if !remaining.iter().any(|s| s.target.is_personal()) {
            if let Some(channel) = self.personal.take() {
                app.hub.leave(&channel, self.id);
                self.recent = None;
            }
        }
        if !remaining.iter().any(|s| s.target == Target::TimeDeals) {
            if let Some(channel) = self.broadcast.take() {
                app.hub.leave(&channel, self.id);
            }
        }
        if self.personal.is_none() && self.broadcast.is_none() {
            // The hub dropped the queue's sender with the last channel.
            self.inbox = None;
        }
    }

    /// The session ended: leave every channel.
    pub fn leave_all(&mut self, app: &AppState) {
        for channel in [self.personal.take(), self.broadcast.take()]
            .into_iter()
            .flatten()
        {
            app.hub.leave(&channel, self.id);
        }
    }

    /// Hands a delivery to the subscriptions it is for: a user channel's notification to
    /// the notification subscriptions (unless the recovery sent it already), its state
    /// event to the state subscriptions, a broadcast to the time-deal subscriptions.
    pub async fn deliver(
        &mut self,
        session: &mut Session,
        to_client: &Outlet,
        app: &AppState,
        delivery: &Delivery,
    ) -> Result<(), End> {
        let target = match delivery.source {
            // Boxed: the idle session's future should not be sized for a store query
            // that runs only after a gap.
            Source::Gap => return Box::pin(self.recover_gap(app, session, to_client)).await,
            Source::Broadcast => Target::TimeDeals,
            Source::User if is_state_event(&delivery.json) => Target::State,
            Source::User => Target::Notifications,
        };
        if target == Target::Notifications {
            if let Some(recent) = &self.recent {
                if recent.expired(delivery.received) {
                    self.recent = None;
                } else if recent.sent(&delivery.json) {
                    return Ok(());
                }
            }
            if self.newest.is_some() {
                self.newest = self.newest.max(leading_id(&delivery.json));
            }
        }
        self.send_to(session, to_client, app, target, &delivery.json, None)
            .await
    }

    async fn send_to(
        &self,
        session: &mut Session,
        to_client: &Outlet,
        app: &AppState,
        target: Target,
        json: &str,
        extra: Option<(&str, &str)>,
    ) -> Result<(), End> {
        for index in 0..session.subscriptions().len() {
            if session.subscriptions()[index].target != target {
                continue;
            }
            let text = session.message_text_with(index, json, extra);
            app.metrics.messages_out.inc();
            send(to_client, text, app.limits.send_timeout).await?;
        }
        Ok(())
    }
}

/// A store failure during `what`: logged; the client is told to reconnect.
fn failed(what: &'static str) -> impl Fn(InboxError) -> Failed {
    move |err| {
        tracing::warn!(%err, what, "store unavailable for a subscription");
        Failed::Error("The notification store is unavailable; reconnect later")
    }
}
