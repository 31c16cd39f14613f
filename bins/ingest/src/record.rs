//! A consumed Kafka record, owned, and what is made of a record that can never become a
//! notification: the [`RecordError`] that condemns it and the [`DeadLetter`] for its DLT.
//! The consumer makes records, the pipeline judges them, the DLT producer sends the letters;
//! none of those is imported here.

use rdkafka::message::Message;
use shared::convert::InvalidEvent;

/// A consumed Kafka record, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// Copies a consumed message out of the consumer's buffer.
    pub fn from_message(message: &impl Message) -> Record {
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
        }
    }
}

/// Why a record is dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
    #[error("record has no value")]
    NoValue,
    #[error("record value is {len} bytes (at most {max})")]
    TooLarge { len: usize, max: usize },
    #[error("topic {0:?} is not configured")]
    UnknownTopic(String),
    #[error("the database refused the notification: {0}")]
    StoreRejected(String),
}

impl RecordError {
    /// The error kind written to `kafka_dlt-exception-fqcn`.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::Invalid(e) => e.kind(),
            RecordError::NoValue => "InvalidEvent.NoValue",
            RecordError::TooLarge { .. } => "InvalidEvent.TooLarge",
            RecordError::UnknownTopic(_) => "InvalidEvent.UnknownTopic",
            RecordError::StoreRejected(_) => "StoreRejected",
        }
    }
}

/// A record to dead-letter, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    pub error_kind: String,
    pub error_message: String,
}

impl DeadLetter {
    /// The dead letter of `record`; logs its coordinates and the reason at ERROR.
    pub fn new(record: &Record, err: &RecordError) -> DeadLetter {
        tracing::error!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            kind = err.kind(),
            error = %err,
            "dead-lettering record"
        );
        DeadLetter {
            record: record.clone(),
            error_kind: err.kind().to_owned(),
            error_message: err.to_string(),
        }
    }
}
