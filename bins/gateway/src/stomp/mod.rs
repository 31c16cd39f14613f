//! STOMP 1.0/1.1/1.2: frames and the pure wire codec. No I/O here.

pub mod codec;
pub mod decode;
pub mod frame;
/// Compiled for unit tests and for the fuzz target (feature `fuzzing`), not into the binary.
#[cfg(any(test, feature = "fuzzing"))]
pub mod properties;

pub use codec::encode;
pub use decode::{Decoder, Item, StompError};
pub use frame::{Command, Frame, Version};
