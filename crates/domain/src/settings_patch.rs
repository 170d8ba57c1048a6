//! `PATCH .../qss/settings` (SPEC 6): a JSON object holding any subset of the writable settings,
//! checked as a whole and applied to the current settings. Every bad field is reported, and
//! nothing is applied unless all are good.

use serde_json::{Map, Value};

use crate::event::EventType;
use crate::settings::Settings;
use crate::validation::ValidationErrors;

/// Fields shown by `GET` that a client may not change. Sending one is an error, even with the
/// value it already has, so that a client never believes it changed something it did not.
const READ_ONLY: [&str; 4] = ["account_id", "plan", "qss_addon", "qss_enabled"];

/// The settings `current` becomes under `body`, or every reason `body` is refused. Unknown
/// fields are ignored (SPEC 2).
pub fn apply_settings_patch(
    current: &Settings,
    body: &Value,
) -> Result<Settings, ValidationErrors> {
    let Value::Object(fields) = body else {
        return Err(ValidationErrors::single(
            "",
            "body must be a JSON object of settings",
        ));
    };
    let mut next = current.clone();
    let mut errors = ValidationErrors::new();

    for key in READ_ONLY {
        if fields.contains_key(key) {
            errors.push(key, "is read-only");
        }
    }
    if let Some(value) = fields.get("event_types")
        && let Some(types) = event_types(value, &mut errors)
    {
        next.event_types = types;
    }
    let integers = [
        (
            "aggregation_interval_seconds",
            10,
            3600,
            &mut next.aggregation_interval_seconds,
        ),
        (
            "aggregation_grace_seconds",
            0,
            300,
            &mut next.aggregation_grace_seconds,
        ),
        (
            "meeting_end_timeout_seconds",
            30,
            86_400,
            &mut next.meeting_end_timeout_seconds,
        ),
        ("retention_days", 1, 3650, &mut next.retention_days),
    ];
    for (key, min, max, target) in integers {
        if let Some(value) = fields.get(key) {
            match integer(value, min, max) {
                Ok(n) => *target = n,
                Err(message) => errors.push(key, message),
            }
        }
    }
    if let Some(value) = fields.get("quality_thresholds") {
        match value {
            Value::Object(thresholds) => apply_thresholds(thresholds, &mut next, &mut errors),
            _ => errors.push(
                "quality_thresholds",
                "must be an object of thresholds, merged key by key",
            ),
        }
    }
    errors.into_result(next)
}

/// `quality_thresholds` is merged key by key: keys left out keep their current value.
fn apply_thresholds(
    fields: &Map<String, Value>,
    next: &mut Settings,
    errors: &mut ValidationErrors,
) {
    let q = &mut next.quality_thresholds;
    let thresholds = [
        ("latency_ms", 0.0, 60_000.0, &mut q.latency_ms),
        ("jitter_ms", 0.0, 60_000.0, &mut q.jitter_ms),
        ("packet_loss_pct", 0.0, 100.0, &mut q.packet_loss_pct),
        ("frame_rate_fps", 0.0, 240.0, &mut q.frame_rate_fps),
        ("cpu_usage_pct", 0.0, 100.0, &mut q.cpu_usage_pct),
        ("mos", 1.0, 4.5, &mut q.mos),
    ];
    for (key, min, max, target) in thresholds {
        let Some(value) = fields.get(key) else {
            continue;
        };
        match value.as_f64() {
            // Adding zero turns -0 into 0.
            Some(x) if (min..=max).contains(&x) => *target = x + 0.0,
            _ => errors.push(
                format!("quality_thresholds.{key}"),
                format!("must be a number between {min} and {max}"),
            ),
        }
    }
}

/// A subset of the event types, in canonical order whatever the order sent; duplicates are
/// ignored and an empty list turns every event off.
fn event_types(value: &Value, errors: &mut ValidationErrors) -> Option<Vec<EventType>> {
    let Value::Array(items) = value else {
        errors.push("event_types", "must be an array of event types");
        return None;
    };
    let mut chosen = Vec::new();
    let mut valid = true;
    for (i, item) in items.iter().enumerate() {
        match item.as_str().and_then(EventType::parse) {
            Some(t) => chosen.push(t),
            None => {
                valid = false;
                let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                errors.push(
                    format!("event_types[{i}]"),
                    format!("must be one of {}", known.join(", ")),
                );
            }
        }
    }
    let canonical = EventType::ALL.into_iter().filter(|t| chosen.contains(t));
    valid.then(|| canonical.collect())
}

/// An integer within `min..=max`. A number with a zero fraction (`60.0`) is that integer, as in
/// JSON Schema; `10.5` and `"60"` are not.
fn integer(value: &Value, min: u32, max: u32) -> Result<u32, String> {
    let message = || format!("must be an integer between {min} and {max}");
    let n = match value {
        Value::Number(n) => n.as_f64().ok_or_else(message)?,
        _ => return Err(message()),
    };
    if n.fract() != 0.0 || n < f64::from(min) || n > f64::from(max) {
        return Err(message());
    }
    Ok(n as u32)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::settings::Thresholds;

    /// What a patch is expected to do to the default settings.
    type Change = fn(&mut Settings);

    fn apply(body: Value) -> Result<Settings, ValidationErrors> {
        apply_settings_patch(&Settings::default(), &body)
    }

    #[test]
    fn an_empty_object_changes_nothing() {
        assert_eq!(apply(json!({})).unwrap(), Settings::default());
    }

    #[test]
    fn each_writable_field_is_applied_and_the_rest_kept() {
        let all = EventType::ALL.to_vec();
        #[rustfmt::skip]
        let cases: Vec<(Value, Change)> = vec![
            (json!({"aggregation_interval_seconds": 10}), |s| s.aggregation_interval_seconds = 10),
            (json!({"aggregation_interval_seconds": 3600}), |s| s.aggregation_interval_seconds = 3600),
            (json!({"aggregation_interval_seconds": 120.0}), |s| s.aggregation_interval_seconds = 120),
            (json!({"aggregation_grace_seconds": 0}), |s| s.aggregation_grace_seconds = 0),
            (json!({"aggregation_grace_seconds": 300}), |s| s.aggregation_grace_seconds = 300),
            (json!({"meeting_end_timeout_seconds": 30}), |s| s.meeting_end_timeout_seconds = 30),
            (json!({"meeting_end_timeout_seconds": 86_400}), |s| s.meeting_end_timeout_seconds = 86_400),
            (json!({"retention_days": 1}), |s| s.retention_days = 1),
            (json!({"retention_days": 3650}), |s| s.retention_days = 3650),
            (json!({"event_types": []}), |s| s.event_types = vec![]),
            (json!({"event_types": ["qss.phone_call_qos", "qss.meeting_participant_qos", "qss.phone_call_qos"]}),
             |s| s.event_types = vec![EventType::ParticipantQos, EventType::PhoneCallQos]),
            (json!({"quality_thresholds": {}}), |_| {}),
            (json!({"quality_thresholds": {"mos": 4.5, "latency_ms": 0}}),
             |s| { s.quality_thresholds.mos = 4.5; s.quality_thresholds.latency_ms = 0.0 }),
            (json!({"quality_thresholds": {"mos": 1, "jitter_ms": 60_000, "packet_loss_pct": 100,
                                           "frame_rate_fps": 240, "cpu_usage_pct": 0.5}}),
             |s| s.quality_thresholds = Thresholds { mos: 1.0, jitter_ms: 60_000.0,
                 packet_loss_pct: 100.0, frame_rate_fps: 240.0, cpu_usage_pct: 0.5,
                 ..Thresholds::default() }),
            (json!({"unknown": null, "quality_thresholds": {"unknown": "x"}}), |_| {}),
        ];
        for (body, change) in cases {
            let mut expected = Settings::default();
            change(&mut expected);
            assert_eq!(apply(body.clone()).unwrap(), expected, "{body}");
        }
        assert_eq!(Settings::default().event_types, all);
    }

    #[test]
    fn a_patch_starts_from_the_current_settings() {
        let current =
            apply(json!({"retention_days": 7, "quality_thresholds": {"mos": 4}})).unwrap();
        let next =
            apply_settings_patch(&current, &json!({"quality_thresholds": {"jitter_ms": 20}}))
                .unwrap();
        assert_eq!(next.retention_days, 7);
        assert_eq!(next.quality_thresholds.mos, 4.0);
        assert_eq!(next.quality_thresholds.jitter_ms, 20.0);
    }

    #[test]
    fn each_bad_field_is_named() {
        #[rustfmt::skip]
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!([]), "", "must be a JSON object"),
            (json!(null), "", "must be a JSON object"),
            (json!({"plan": "enterprise"}), "plan", "read-only"),
            (json!({"qss_addon": true}), "qss_addon", "read-only"),
            (json!({"qss_enabled": true}), "qss_enabled", "read-only"),
            (json!({"account_id": "abc"}), "account_id", "read-only"),
            (json!({"event_types": null}), "event_types", "must be an array"),
            (json!({"event_types": "qss.phone_call_qos"}), "event_types", "must be an array"),
            (json!({"event_types": ["qss.phone_call_qos", "qss.other"]}), "event_types[1]", "must be one of qss.meeting_participant_qos, "),
            (json!({"event_types": [3]}), "event_types[0]", "must be one of"),
            (json!({"aggregation_interval_seconds": 9}), "aggregation_interval_seconds", "must be an integer between 10 and 3600"),
            (json!({"aggregation_interval_seconds": 3601}), "aggregation_interval_seconds", "between 10 and 3600"),
            (json!({"aggregation_interval_seconds": 10.5}), "aggregation_interval_seconds", "must be an integer"),
            (json!({"aggregation_interval_seconds": "60"}), "aggregation_interval_seconds", "must be an integer"),
            (json!({"aggregation_interval_seconds": null}), "aggregation_interval_seconds", "must be an integer"),
            (json!({"aggregation_interval_seconds": -60}), "aggregation_interval_seconds", "must be an integer"),
            (json!({"aggregation_interval_seconds": 1e300}), "aggregation_interval_seconds", "must be an integer"),
            (json!({"aggregation_grace_seconds": 301}), "aggregation_grace_seconds", "between 0 and 300"),
            (json!({"meeting_end_timeout_seconds": 29}), "meeting_end_timeout_seconds", "between 30 and 86400"),
            (json!({"retention_days": 0}), "retention_days", "between 1 and 3650"),
            (json!({"retention_days": 3651}), "retention_days", "between 1 and 3650"),
            (json!({"quality_thresholds": null}), "quality_thresholds", "must be an object"),
            (json!({"quality_thresholds": [150]}), "quality_thresholds", "must be an object"),
            (json!({"quality_thresholds": {"latency_ms": 60_001}}), "quality_thresholds.latency_ms", "between 0 and 60000"),
            (json!({"quality_thresholds": {"jitter_ms": -1}}), "quality_thresholds.jitter_ms", "between 0 and 60000"),
            (json!({"quality_thresholds": {"packet_loss_pct": 100.5}}), "quality_thresholds.packet_loss_pct", "between 0 and 100"),
            (json!({"quality_thresholds": {"frame_rate_fps": 241}}), "quality_thresholds.frame_rate_fps", "between 0 and 240"),
            (json!({"quality_thresholds": {"cpu_usage_pct": "80"}}), "quality_thresholds.cpu_usage_pct", "between 0 and 100"),
            (json!({"quality_thresholds": {"mos": 4.6}}), "quality_thresholds.mos", "must be a number between 1 and 4.5"),
            (json!({"quality_thresholds": {"mos": null}}), "quality_thresholds.mos", "between 1 and 4.5"),
        ];
        for (body, field, message) in cases {
            let errors = apply(body.clone()).unwrap_err();
            assert_eq!(errors.errors.len(), 1, "{body}: {errors}");
            assert_eq!(errors.errors[0].field, field, "{body}");
            assert!(
                errors.errors[0].message.contains(message),
                "{body}: {errors}"
            );
        }
    }

    #[test]
    fn every_bad_field_is_reported_and_nothing_is_applied() {
        let body = json!({
            "plan": "pro", "retention_days": 0, "aggregation_grace_seconds": 20,
            "event_types": ["nope"], "quality_thresholds": {"mos": 0, "jitter_ms": 10},
        });
        let errors = apply(body).unwrap_err();
        let fields: Vec<&str> = errors.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "plan",
                "event_types[0]",
                "retention_days",
                "quality_thresholds.mos"
            ]
        );
    }
}
