//! Read marks over STOMP (`SEND /app/notifications.read`): the session user's notifications
//! are marked read in the store, and the resulting state event goes to every session of the
//! user. Ids that are not the user's (or not unread) are ignored: the READ event lists only
//! the ids that changed, so nothing about another user's notifications is revealed.

use chrono::Utc;

use crate::destination::ReadRequest;
use crate::state::AppState;
use crate::sync::events::StateEvent;

/// Marks `request` read for `user`; `Err` is the client's ERROR message.
pub(super) async fn mark(
    app: &AppState,
    user: &str,
    request: ReadRequest,
) -> Result<(), &'static str> {
    let Some(inbox) = &app.sync.inbox else {
        return Err("Read marks need the notification store, which this gateway lacks");
    };
    let unavailable = |err| {
        tracing::warn!(%err, "read marks failed");
        "The notification store is unavailable; retry later"
    };
    let event = match request {
        ReadRequest::Ids(ids) => {
            let change = inbox
                .mark_read_ids(user, &ids, Utc::now())
                .await
                .map_err(unavailable)?;
            change.changed.then_some(StateEvent::Read {
                ids: change.value,
                unread: change.unread,
            })
        }
        ReadRequest::All => {
            let change = inbox
                .mark_all_read(user, Utc::now())
                .await
                .map_err(unavailable)?;
            change.changed.then_some(StateEvent::ReadAll {
                unread: change.unread,
            })
        }
    };
    if let Some(event) = event {
        app.sync.events.publish(user, &event).await;
    }
    Ok(())
}
