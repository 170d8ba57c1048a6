//! Parsing and validation of telemetry batches (SPEC 4): JSON `{"samples": [...]}` or NDJSON,
//! whole-request validation with the JSON path of every bad field.

use crate::sample::Sample;
use crate::timefmt::Millis;
use crate::validation::ValidationErrors;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Ndjson,
}

#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    pub max_samples: usize,
    pub max_sample_age_ms: i64,
}

#[derive(Debug)]
pub enum IngestError {
    /// More samples than `max_samples` (413).
    TooManySamples { count: usize, max: usize },
    /// 400/300.
    Invalid(ValidationErrors),
}

/// Parses and validates a whole batch; `now` is the server's clock at receipt.
pub fn parse_batch(
    _body: &[u8],
    _format: BodyFormat,
    _now: Millis,
    _limits: &IngestLimits,
) -> Result<Vec<Sample>, IngestError> {
    unimplemented!("being written")
}
