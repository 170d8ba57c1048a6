//! What happens to a delivery after an attempt (SPEC 7.4): succeed, retry at a given time, fail,
//! disable the subscription, or expire.
//!
//! A pure function of the attempt's result and injected time and randomness (`now_ms`,
//! `jitter`), so every row of the policy is a table test and the worker stays deterministic
//! under test.

use crate::client::{AttemptError, AttemptResult, RetryAfter};
use std::time::UNIX_EPOCH;

/// SPEC 7.4: a `Retry-After` is honoured up to this many seconds.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// SPEC 7.4: scheduled delays vary by ±10 % so that deliveries that failed together (an endpoint
/// outage) do not all come back in the same instant.
pub const JITTER_FRACTION: f64 = 0.1;

/// The next state of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: the delivery is `succeeded`.
    Succeeded,
    /// Attempt again at `at_ms` (Unix milliseconds); the delivery stays `pending`.
    Retry { at_ms: i64 },
    /// No retry: a 3xx, another 4xx, a refused address, or the schedule is exhausted.
    Failed,
    /// A 410 Gone: the delivery fails and the subscription becomes `disabled`.
    Disable,
    /// The next attempt would come after the subscription's `max_age_seconds`.
    Expired,
}

/// How an attempt's result calls for retrying, before the schedule and age limits apply.
enum Retryability {
    Succeeded,
    Disable,
    Permanent,
    /// Retry after the scheduled delay for this step.
    Scheduled,
    /// Retry at the time the endpoint asked for.
    Asked(RetryAfter),
}

fn retryability(result: &AttemptResult) -> Retryability {
    use AttemptError::{Connect, Dns, HttpStatus, RefusedAddress, Timeout, Tls};
    match (result.http_status, result.error, result.retry_after) {
        (Some(200..=299), ..) => Retryability::Succeeded,
        (Some(410), ..) => Retryability::Disable,
        (Some(429 | 503), _, Some(retry_after)) => Retryability::Asked(retry_after),
        // 429 without a (valid) Retry-After is still a request to slow down, not a verdict on the
        // request, so it takes the scheduled delay like a 503 without one.
        (Some(408 | 429 | 500..=599), ..) => Retryability::Scheduled,
        (Some(_), ..) => Retryability::Permanent,
        (None, Some(Timeout | Connect | Dns | Tls), _) => Retryability::Scheduled,
        (None, Some(RefusedAddress | HttpStatus) | None, _) => Retryability::Permanent,
    }
}

/// Decides what follows attempt number `attempt_number` (1-based, the one just made), which ended
/// at `now_ms`.
///
/// - 2xx succeeds; 410 disables; 3xx, other 4xx and a refused address fail at once.
/// - 429 and 503 with a valid `Retry-After` are retried at exactly that time (at most 3600 s
///   ahead, a date in the past meaning now, no jitter).
/// - 408, other 5xx (and 429/503 without `Retry-After`), timeouts and connect, TLS and DNS errors
///   are retried after `schedule[attempt_number - 1]` seconds, scaled by `1 + 0.1 * jitter`,
///   where `jitter` in [-1, 1] is supplied by the caller (clamped).
/// - Every failed attempt uses a step, including those retried at a `Retry-After`; once the
///   schedule is used up the delivery has failed.
/// - A retry that would be due when the delivery is older (from `created_at_ms`) than
///   `max_age_seconds` expires the delivery instead.
pub fn decide(
    result: &AttemptResult,
    attempt_number: u32,
    schedule: &[u64],
    now_ms: i64,
    created_at_ms: i64,
    max_age_seconds: Option<u64>,
    jitter: f64,
) -> Outcome {
    let retry = match retryability(result) {
        Retryability::Succeeded => return Outcome::Succeeded,
        Retryability::Disable => return Outcome::Disable,
        Retryability::Permanent => return Outcome::Failed,
        retry => retry,
    };
    let step = attempt_number.max(1) as usize - 1;
    let Some(&scheduled_secs) = schedule.get(step) else {
        return Outcome::Failed;
    };
    let at_ms = match retry {
        Retryability::Asked(retry_after) => asked_time_ms(retry_after, now_ms),
        _ => {
            let jitter = if jitter.is_nan() {
                0.0
            } else {
                jitter.clamp(-1.0, 1.0)
            };
            let delay_ms = scheduled_secs as f64 * 1000.0 * (1.0 + JITTER_FRACTION * jitter);
            now_ms.saturating_add(delay_ms.round() as i64)
        }
    };
    let too_old = max_age_seconds.is_some_and(|max_age| {
        let max_age_ms = i64::try_from(max_age.saturating_mul(1000)).unwrap_or(i64::MAX);
        at_ms.saturating_sub(created_at_ms) > max_age_ms
    });
    if too_old {
        Outcome::Expired
    } else {
        Outcome::Retry { at_ms }
    }
}

/// The time a `Retry-After` asks for, kept between now and now + 3600 s.
fn asked_time_ms(retry_after: RetryAfter, now_ms: i64) -> i64 {
    let cap_ms = (MAX_RETRY_AFTER_SECS * 1000) as i64;
    let delay_ms = match retry_after {
        RetryAfter::Delay(delay) => i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        RetryAfter::At(at) => match at.duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => i64::try_from(since_epoch.as_millis())
                .unwrap_or(i64::MAX)
                .saturating_sub(now_ms),
            Err(_) => 0,
        },
    };
    now_ms.saturating_add(delay_ms.clamp(0, cap_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SCHEDULE: &[u64] = &[300, 1200, 3600];
    const NOW: i64 = 1_700_000_000_000;

    fn status(code: u16) -> AttemptResult {
        AttemptResult {
            http_status: Some(code),
            error: (!(200..300).contains(&code)).then_some(AttemptError::HttpStatus),
            duration_ms: 5,
            response_body: String::new(),
            retry_after: None,
        }
    }

    fn error(kind: AttemptError) -> AttemptResult {
        AttemptResult {
            http_status: None,
            error: Some(kind),
            duration_ms: 5,
            response_body: String::new(),
            retry_after: None,
        }
    }

    fn with_retry_after(code: u16, retry_after: RetryAfter) -> AttemptResult {
        AttemptResult {
            retry_after: Some(retry_after),
            ..status(code)
        }
    }

    fn first_attempt(result: &AttemptResult) -> Outcome {
        decide(result, 1, SCHEDULE, NOW, NOW, None, 0.0)
    }

    const AFTER_300_S: Outcome = Outcome::Retry {
        at_ms: NOW + 300_000,
    };

    #[test]
    fn each_kind_of_result_leads_to_the_outcome_the_spec_gives_it() {
        let secs = |s| RetryAfter::Delay(Duration::from_secs(s));
        let rows: Vec<(&str, AttemptResult, Outcome)> = vec![
            ("200", status(200), Outcome::Succeeded),
            ("204", status(204), Outcome::Succeeded),
            ("299", status(299), Outcome::Succeeded),
            ("410 disables", status(410), Outcome::Disable),
            ("408", status(408), AFTER_300_S),
            ("500", status(500), AFTER_300_S),
            ("502", status(502), AFTER_300_S),
            ("503 without retry-after", status(503), AFTER_300_S),
            ("429 without retry-after", status(429), AFTER_300_S),
            ("599", status(599), AFTER_300_S),
            ("timeout", error(AttemptError::Timeout), AFTER_300_S),
            ("connect", error(AttemptError::Connect), AFTER_300_S),
            ("dns", error(AttemptError::Dns), AFTER_300_S),
            ("tls", error(AttemptError::Tls), AFTER_300_S),
            (
                "refused address",
                error(AttemptError::RefusedAddress),
                Outcome::Failed,
            ),
            ("301 is never followed", status(301), Outcome::Failed),
            ("302", status(302), Outcome::Failed),
            ("304", status(304), Outcome::Failed),
            ("400", status(400), Outcome::Failed),
            ("401", status(401), Outcome::Failed),
            ("403", status(403), Outcome::Failed),
            ("404", status(404), Outcome::Failed),
            ("413", status(413), Outcome::Failed),
            ("422", status(422), Outcome::Failed),
            (
                "429 with retry-after seconds",
                with_retry_after(429, secs(42)),
                Outcome::Retry {
                    at_ms: NOW + 42_000,
                },
            ),
            (
                "503 with retry-after seconds",
                with_retry_after(503, secs(7)),
                Outcome::Retry { at_ms: NOW + 7_000 },
            ),
            (
                "500 ignores retry-after",
                with_retry_after(500, secs(7)),
                AFTER_300_S,
            ),
            (
                "400 ignores retry-after",
                with_retry_after(400, secs(7)),
                Outcome::Failed,
            ),
        ];
        for (name, result, expected) in rows {
            assert_eq!(first_attempt(&result), expected, "{name}");
        }
    }

    #[test]
    fn retry_after_is_capped_at_an_hour_and_a_past_date_means_now() {
        let far = with_retry_after(503, RetryAfter::Delay(Duration::from_secs(86_400)));
        assert_eq!(
            first_attempt(&far),
            Outcome::Retry {
                at_ms: NOW + 3_600_000
            }
        );
        let now = UNIX_EPOCH + Duration::from_millis(NOW as u64);
        let date = with_retry_after(429, RetryAfter::At(now + Duration::from_secs(90)));
        assert_eq!(
            first_attempt(&date),
            Outcome::Retry {
                at_ms: NOW + 90_000
            }
        );
        let far_date = with_retry_after(429, RetryAfter::At(now + Duration::from_secs(7200)));
        assert_eq!(
            first_attempt(&far_date),
            Outcome::Retry {
                at_ms: NOW + 3_600_000
            }
        );
        let past = with_retry_after(503, RetryAfter::At(now - Duration::from_secs(60)));
        assert_eq!(first_attempt(&past), Outcome::Retry { at_ms: NOW });
    }

    #[test]
    fn retry_after_gets_no_jitter() {
        let r = with_retry_after(503, RetryAfter::Delay(Duration::from_secs(10)));
        assert_eq!(
            decide(&r, 1, SCHEDULE, NOW, NOW, None, 1.0),
            Outcome::Retry {
                at_ms: NOW + 10_000
            }
        );
    }

    #[test]
    fn attempt_n_waits_the_nth_step_of_the_schedule() {
        let r = status(500);
        for (n, secs) in [(1, 300), (2, 1200), (3, 3600)] {
            assert_eq!(
                decide(&r, n, SCHEDULE, NOW, NOW, None, 0.0),
                Outcome::Retry {
                    at_ms: NOW + secs * 1000
                },
                "attempt {n}"
            );
        }
    }

    #[test]
    fn after_the_last_step_the_delivery_fails_even_if_retry_after_was_given() {
        assert_eq!(
            decide(&status(500), 4, SCHEDULE, NOW, NOW, None, 0.0),
            Outcome::Failed
        );
        let r = with_retry_after(503, RetryAfter::Delay(Duration::from_secs(1)));
        assert_eq!(
            decide(&r, 4, SCHEDULE, NOW, NOW, None, 0.0),
            Outcome::Failed
        );
        assert_eq!(
            decide(&status(500), 1, &[], NOW, NOW, None, 0.0),
            Outcome::Failed
        );
    }

    #[test]
    fn jitter_moves_the_scheduled_delay_by_at_most_ten_percent() {
        let r = error(AttemptError::Timeout);
        for (jitter, at_ms) in [
            (1.0, NOW + 330_000),
            (-1.0, NOW + 270_000),
            (0.5, NOW + 315_000),
            (7.0, NOW + 330_000),
            (-7.0, NOW + 270_000),
            (f64::NAN, NOW + 300_000),
        ] {
            assert_eq!(
                decide(&r, 1, SCHEDULE, NOW, NOW, None, jitter),
                Outcome::Retry { at_ms },
                "jitter {jitter}"
            );
        }
    }

    #[test]
    fn a_retry_due_after_the_max_age_expires_the_delivery() {
        let r = status(500);
        let created = NOW - 100_000;
        // Next attempt at NOW + 300 s, age 400 s.
        assert_eq!(
            decide(&r, 1, SCHEDULE, NOW, created, Some(399), 0.0),
            Outcome::Expired
        );
        assert_eq!(
            decide(&r, 1, SCHEDULE, NOW, created, Some(400), 0.0),
            Outcome::Retry {
                at_ms: NOW + 300_000
            }
        );
        let asked = with_retry_after(429, RetryAfter::Delay(Duration::from_secs(60)));
        assert_eq!(
            decide(&asked, 1, SCHEDULE, NOW, created, Some(159), 0.0),
            Outcome::Expired
        );
        assert_eq!(
            decide(&asked, 1, SCHEDULE, NOW, created, None, 0.0),
            Outcome::Retry {
                at_ms: NOW + 60_000
            }
        );
    }

    #[test]
    fn max_age_does_not_override_success_disable_or_permanent_failure() {
        let created = NOW - 10_000_000;
        for (result, expected) in [
            (status(200), Outcome::Succeeded),
            (status(410), Outcome::Disable),
            (status(404), Outcome::Failed),
        ] {
            assert_eq!(
                decide(&result, 1, SCHEDULE, NOW, created, Some(60), 0.0),
                expected
            );
        }
    }
}
