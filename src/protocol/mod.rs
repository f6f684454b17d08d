//! PostgreSQL v3 protocol values and framing, without IO.
//!
//! The relay copies most messages as raw frames; only the few it must understand are decoded
//! here, with every length checked before anything is allocated or sliced: start-up messages
//! (`startup`), frontend messages and authentication (`message`), result messages
//! (`results`). pgwire supplies the message types used to *encode* what the proxy itself
//! sends (errors, rewritten queries); its decoders are not used on peer bytes because they
//! assume well-formed input.

pub mod error;
pub mod frame;
pub mod message;
pub mod results;
pub mod startup;

#[cfg(test)]
mod decoder_props;

pub use error::PgError;
pub use frame::{Frame, FrameError, FrameReader};
