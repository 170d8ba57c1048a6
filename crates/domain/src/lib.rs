//! The vocabulary of qss: accounts, samples, settings, events and the validation that turns
//! untrusted input into these types. Nothing here does IO, knows about HTTP or SQL, or reads a
//! clock: callers pass `now` in.

pub mod event;
pub mod ids;
pub mod ingest;
pub mod num;
pub mod sample;
pub mod settings;
pub mod settings_patch;
pub mod timefmt;
pub mod validation;

pub use event::{EventEnvelope, EventType};
pub use ids::{AccountId, Plan};
pub use num::Num;
pub use sample::Sample;
pub use settings::{Settings, Thresholds};
pub use validation::{FieldError, ValidationErrors};
