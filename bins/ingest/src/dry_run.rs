//! `ingest convert`: converts one event read from stdin and prints the notification JSON it
//! would store (`id` and `createdAt` null), so an operator can check a record before a replay.

use std::io::{Read, Write};
use std::process::ExitCode;

use shared::convert::convert as convert_event;
use shared::event::TopicMap;

/// Exit status of an event that would be dead-lettered, or of an unknown topic.
const EXIT_INVALID: u8 = 2;

/// Converts the event on `input` as if it arrived on `topic`.
pub fn convert(
    topics: &TopicMap,
    topic: &str,
    mut input: impl Read,
    mut out: impl Write,
    mut err: impl Write,
) -> ExitCode {
    let Some(kind) = topics.kind(topic) else {
        let known = topics.topics().join(", ");
        let _ = writeln!(err, "unknown topic {topic:?}; known topics: {known}");
        return ExitCode::from(EXIT_INVALID);
    };
    let mut value = Vec::new();
    if let Err(e) = input.read_to_end(&mut value) {
        let _ = writeln!(err, "cannot read the event from stdin: {e}");
        return ExitCode::from(EXIT_INVALID);
    }
    match convert_event(kind, &value) {
        Ok(Some(notification)) => {
            let _ = writeln!(out, "{}", notification.to_json());
            ExitCode::SUCCESS
        }
        Ok(None) => {
            let _ = writeln!(
                err,
                "valid {kind} event; this topic makes no per-user notification (committed, no row)"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(
                err,
                "invalid event, would be dead-lettered ({}): {e}",
                e.kind()
            );
            ExitCode::from(EXIT_INVALID)
        }
    }
}
