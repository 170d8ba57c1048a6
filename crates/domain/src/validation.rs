//! Validation failures, reported as the SPEC's `errors[]`: a JSON path and a message each.

use serde::Serialize;

/// The most entries an error body carries (SPEC 2).
pub const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path into the request (`samples[3].metrics.audio.packet_loss`), a query parameter
    /// name, or `""` for the body as a whole.
    pub field: String,
    pub message: String,
}

/// Every failure found in one request. Collection keeps going after the first failure so that
/// a client learns everything it must fix at once; only the first hundred are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
    /// Total failures found, which may exceed `errors.len()`.
    pub total: usize,
}

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new();
        e.push(field, message);
        e
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.total += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn into_result<T>(self, ok: T) -> Result<T, ValidationErrors> {
        if self.is_empty() { Ok(ok) } else { Err(self) }
    }

    /// The top-level message of the error body.
    pub fn message(&self) -> String {
        if self.total > self.errors.len() {
            format!(
                "Validation Failed: {} errors, the first {} are listed.",
                self.total,
                self.errors.len()
            )
        } else {
            "Validation Failed.".to_string()
        }
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message())?;
        for e in &self.errors {
            write!(f, " {}: {};", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
