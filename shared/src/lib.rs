//! Conveyor's shared library: the event catalogue, the RabbitMQ bus, configuration, telemetry,
//! the admin server, the retry policy and shutdown handling. Every service stands on it.

pub mod admin;
pub mod bounded;
pub mod bus;
pub mod config;
pub mod control;
pub mod events;
pub mod executor;
pub mod fence;
pub mod freeze;
#[cfg(feature = "github")]
pub mod github;
#[cfg(feature = "http")]
pub mod http;
pub mod redact;
pub mod retry;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod signature;
pub mod supersede;
pub mod sync;
pub mod telemetry;
pub mod text;

pub use bus::{Bus, BusError, ConsumerOptions, Disposition, Incoming, Outcome, Topology};
pub use events::{Envelope, Event};
#[cfg(feature = "testing")]
pub mod testing;
