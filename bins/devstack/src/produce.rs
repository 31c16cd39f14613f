//! Sending events: what the demo page's buttons and `devstack produce` ask for, checked,
//! then produced (samples, or a value given as it is).

use std::io::Write;

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use shared::event::EventKind;

use crate::cli::ProduceArgs;
use crate::{kafka, samples};

/// Most events one request may ask for per topic.
pub const MAX_COUNT: u32 = 1000;

/// A checked request to produce.
#[derive(Debug, Clone)]
pub struct Request {
    /// The topics: one, or all 14.
    pub kinds: Vec<EventKind>,
    pub count: u32,
    pub user: String,
    /// A value sent as it is instead of samples.
    pub value: Option<String>,
}

impl Request {
    /// Checks what a caller asked for: `topic` is an input topic or `all`.
    pub fn new(
        topic: &str,
        count: u32,
        user: &str,
        value: Option<String>,
    ) -> Result<Request, String> {
        let kinds = if topic == "all" {
            EventKind::ALL.to_vec()
        } else {
            vec![samples::kind_of(topic).ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.default_topic()).collect();
                format!(
                    "unknown topic {topic:?}: one of {}, or all",
                    names.join(", ")
                )
            })?]
        };
        if !(1..=MAX_COUNT).contains(&count) {
            return Err(format!("count must be between 1 and {MAX_COUNT}"));
        }
        let user = user.trim();
        if user.is_empty() || user.chars().count() > 64 || user.starts_with("broadcast:") {
            return Err(
                "the user id must have 1 to 64 characters and not start with broadcast:".into(),
            );
        }
        if value.is_some() && kinds.len() > 1 {
            return Err("a custom value goes to one topic, not to all".into());
        }
        Ok(Request {
            kinds,
            count,
            user: user.to_owned(),
            value,
        })
    }

    /// Produces the events; returns how many went to each topic.
    pub async fn send(
        &self,
        producer: &FutureProducer,
    ) -> anyhow::Result<Vec<(&'static str, u32)>> {
        let mut sent = Vec::new();
        for kind in &self.kinds {
            let topic = kind.default_topic();
            for _ in 0..self.count {
                let (key, value) = match &self.value {
                    Some(value) => (self.user.clone(), value.clone().into_bytes()),
                    None => {
                        let (key, value) = samples::sample(*kind, &self.user);
                        (key, serde_json::to_vec(&value)?)
                    }
                };
                kafka::produce(producer, topic, &key, &value).await?;
            }
            sent.push((topic, self.count));
        }
        Ok(sent)
    }
}

/// `devstack produce`: sends, then prints one line per topic.
pub async fn command(args: ProduceArgs) -> anyhow::Result<()> {
    let request = Request::new(&args.topic, args.count, &args.user, args.value)
        .map_err(anyhow::Error::msg)?;
    let producer = kafka::producer(&args.bootstrap)?;
    let sent = request.send(&producer).await.with_context(|| {
        format!(
            "is devstack running with its Kafka at {}? (start it with `cargo run --release -p devstack`)",
            args.bootstrap
        )
    })?;
    let mut out = std::io::stdout().lock();
    for (topic, count) in sent {
        let to = match samples::kind_of(topic) {
            Some(EventKind::TimeDealStarted) => "everyone (a time-deal broadcast)",
            _ => request.user.as_str(),
        };
        writeln!(out, "produced {count} event(s) to {topic} for {to}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        assert_eq!(Request::new("all", 1, "u", None).unwrap().kinds.len(), 14);
        let one = Request::new("blog.post.liked", 3, " u ", None).unwrap();
        assert_eq!((one.kinds.len(), one.count, one.user.as_str()), (1, 3, "u"));
        assert!(Request::new("nope", 1, "u", None).is_err());
        assert!(Request::new("all", 0, "u", None).is_err());
        assert!(Request::new("all", 1, "", None).is_err());
        assert!(Request::new("all", 1, "broadcast:x", None).is_err());
        assert!(Request::new("all", 1, "u", Some("{}".into())).is_err());
    }
}
