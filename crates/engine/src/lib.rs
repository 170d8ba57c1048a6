//! The engine turns validated samples into the numbers of qss's events (SPEC 5): quality scoring
//! (5.5), per-window accumulators for participant and phone-call events (5.2, 5.4) and the
//! per-instance accumulator of meeting summaries (5.3).
//!
//! Everything here is pure: no IO, no clock, no async. Callers decide which samples belong to
//! which window or instance and pass times in; the accumulators only add, merge and finish.
//! Every accumulator gives the same result whatever the order samples arrive in and however
//! they were split into partial accumulators before merging, so a caller may aggregate in
//! parallel, persist partial state, or replay from storage without changing any event.

pub mod aggregator;
pub mod distribution;
pub mod scoring;
pub mod summary;
pub mod window;

mod groups;
mod pick;
mod sum;

pub use distribution::Distribution;
pub use scoring::{call_quality, grade, participant_quality, r_and_mos};
pub use summary::{MeetingSummaryAcc, SummaryCtx};
pub use window::{CallWindowAcc, CallWindowCtx, ParticipantWindowAcc, WindowCtx};
