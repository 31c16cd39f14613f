//! STOMP 1.0/1.1/1.2: frames and the pure wire codec. No I/O here.

pub mod codec;
pub mod frame;
pub mod properties;

pub use codec::{Decoder, Item, StompError, encode};
pub use frame::{Command, Frame, Version};
