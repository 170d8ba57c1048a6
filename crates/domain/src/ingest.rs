//! Parsing and validation of telemetry batches (SPEC 4): JSON `{"samples": [...]}` or NDJSON,
//! whole-request validation with the JSON path of every bad field.
//!
//! A body is read in one pass into a small JSON tree (`tree`) that borrows its strings from the
//! body; every sample is then checked field by field (`check`), so that one request reports
//! everything a client must fix (SPEC 2) and strings are copied only into the samples kept.
//! Before any parsing a byte scan rejects nesting deeper than [`MAX_DEPTH`]: a hostile body is
//! refused in linear time and never reaches a recursive parser deep enough to matter.

mod check;
mod tree;

use check::Checker;
use tree::{Node, Role, parse_node};

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

/// The deepest nesting of arrays and objects a body may have (SPEC 2); the top level counts as 1.
pub const MAX_DEPTH: usize = 64;

/// How far ahead of the server's clock a sample's timestamp may be (SPEC 4).
pub const MAX_FUTURE_MS: i64 = 300_000;

/// Parses and validates a whole batch; `now` is the server's clock at receipt.
pub fn parse_batch(
    body: &[u8],
    format: BodyFormat,
    now: Millis,
    limits: &IngestLimits,
) -> Result<Vec<Sample>, IngestError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        body_error(format!(
            "body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let items = match format {
        BodyFormat::Json => json_items(text, limits.max_samples)?,
        BodyFormat::Ndjson => ndjson_items(text, limits.max_samples)?,
    };

    let mut checker = Checker::new(now, limits);
    let mut samples = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        checker.index = index;
        match item {
            Ok(node) => samples.extend(checker.sample(node)),
            Err(message) => checker.fail("", "", message.as_str()),
        }
    }
    checker
        .errors
        .into_result(samples)
        .map_err(IngestError::Invalid)
}

/// A sample as read from the body: a tree, or why its NDJSON line could not be parsed.
type Item<'a> = Result<Node<'a>, String>;

fn json_items(text: &str, max_samples: usize) -> Result<Vec<Item<'_>>, IngestError> {
    if nesting_exceeds(text, MAX_DEPTH) {
        return Err(too_deep());
    }
    let top = parse_node(text, Role::Batch { max_samples })
        .map_err(|e| body_error(format!("invalid JSON: {e}")))?;
    let Node::Object(fields) = top else {
        return Err(body_error(format!(
            "body must be a JSON object with a \"samples\" array, got {}",
            top.describe()
        )));
    };
    let samples = fields.into_iter().rev().find(|(key, _)| key == "samples");
    let (items, len) = match samples {
        Some((_, Node::Array { items, len })) => (items, len),
        Some((_, other)) => {
            return Err(invalid(
                "samples",
                format!("must be an array of samples, got {}", other.describe()),
            ));
        }
        None => return Err(invalid("samples", "is required")),
    };
    check_count(len, max_samples)?;
    Ok(items.into_iter().map(Ok).collect())
}

/// NDJSON: one sample per line; blank lines do not count, so line i of the others is `samples[i]`.
fn ndjson_items(text: &str, max_samples: usize) -> Result<Vec<Item<'_>>, IngestError> {
    let lines: Vec<&str> = text
        .split('\n')
        .filter(|line| !line.trim().is_empty())
        .collect();
    // Counting is cheap here, so an oversized batch is a 413 before anything else (SPEC 2 order).
    check_count(lines.len(), max_samples)?;
    // A raw newline cannot occur inside a JSON string, so each line is scanned on its own.
    if lines.iter().any(|line| nesting_exceeds(line, MAX_DEPTH)) {
        return Err(too_deep());
    }
    Ok(lines
        .into_iter()
        .map(|line| parse_node(line, Role::Value).map_err(|e| format!("invalid JSON: {e}")))
        .collect())
}

fn check_count(count: usize, max: usize) -> Result<(), IngestError> {
    if count > max {
        return Err(IngestError::TooManySamples { count, max });
    }
    if count == 0 {
        return Err(invalid("samples", "must hold at least one sample"));
    }
    Ok(())
}

fn invalid(field: &str, message: impl Into<String>) -> IngestError {
    IngestError::Invalid(ValidationErrors::single(field, message))
}

fn body_error(message: String) -> IngestError {
    invalid("", message)
}

fn too_deep() -> IngestError {
    body_error(format!(
        "body is nested deeper than {MAX_DEPTH} levels of arrays and objects"
    ))
}

/// Whether brackets nest deeper than `max`, ignoring those inside strings. Malformed input is
/// left for the parser to describe; this only has to be right for input that parses.
pub fn nesting_exceeds(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use time::format_description::well_known::Rfc3339;
    use time::{OffsetDateTime, UtcOffset};

    use super::*;
    use crate::sample::{
        CallEnded, CallMetrics, CallQos, Direction, MediaMetrics, MeetingEnded, MeetingType,
        ParticipantMetrics, ParticipantQos,
    };

    /// 2024-01-15T10:30:00Z.
    const NOW: Millis = 1_705_314_600_000;
    const DAY_MS: i64 = 86_400_000;
    const LIMITS: IngestLimits = IngestLimits {
        max_samples: 10_000,
        max_sample_age_ms: DAY_MS,
    };

    fn participant() -> Value {
        json!({
            "kind": "participant_qos", "meeting_id": "m1", "participant_id": "p1",
            "timestamp": "2024-01-15T10:29:00Z",
            "metrics": {"audio": {"bitrate": 64, "latency": 80, "jitter": 5, "packet_loss": 0.5}},
        })
    }

    fn call() -> Value {
        json!({
            "kind": "call_qos", "call_id": "c1", "direction": "inbound",
            "timestamp": "2024-01-15T10:29:00Z",
            "metrics": {"bitrate": 64, "latency": 80, "jitter": 5, "packet_loss": 0.5},
        })
    }

    fn json_body(samples: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({ "samples": samples })).unwrap()
    }

    fn ndjson_body(samples: &[Value]) -> Vec<u8> {
        let lines: Vec<String> = samples.iter().map(Value::to_string).collect();
        lines.join("\n").into_bytes()
    }

    /// `value` with the member at JSON pointer `pointer` replaced, or removed when `new` is None.
    fn with(mut value: Value, pointer: &str, new: Option<Value>) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let object = value.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match new {
            Some(new) => object.insert(key.to_string(), new),
            None => object.remove(key),
        };
        value
    }

    fn parse(body: &[u8], format: BodyFormat) -> Result<Vec<Sample>, IngestError> {
        parse_batch(body, format, NOW, &LIMITS)
    }

    fn errors_of(body: &[u8], format: BodyFormat) -> ValidationErrors {
        match parse(body, format) {
            Err(IngestError::Invalid(errors)) => errors,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    fn assert_single_error(body: &[u8], format: BodyFormat, field: &str, message: &str) {
        let errors = errors_of(body, format);
        assert_eq!(errors.errors.len(), 1, "{errors}");
        assert_eq!(errors.errors[0].field, field, "{errors}");
        assert!(
            errors.errors[0].message.contains(message),
            "{:?} does not contain {message:?}",
            errors.errors[0].message
        );
    }

    #[test]
    fn each_invalid_field_is_reported_at_its_path() {
        let long = |n: usize| Value::String("x".repeat(n));
        let p = participant;
        let video = json!({"bitrate": 900, "latency": 80, "jitter": 5, "packet_loss": 0});
        let with_video = || with(p(), "/metrics/video", Some(video.clone()));
        let minute_ago = "2024-01-15T10:29:00Z";
        #[rustfmt::skip]
        let cases: Vec<(Value, &str, &str)> = vec![
            (json!(42), "samples[0]", "must be an object, got a number"),
            (with(p(), "/kind", None), "samples[0].kind", "is required"),
            (with(p(), "/kind", Some(json!("participant"))), "samples[0].kind", "must be one of participant_qos, call_qos, meeting_ended, call_ended"),
            (with(p(), "/kind", Some(json!(1))), "samples[0].kind", "got a number"),
            (with(p(), "/meeting_id", None), "samples[0].meeting_id", "is required"),
            (with(p(), "/meeting_id", Some(Value::Null)), "samples[0].meeting_id", "must not be null"),
            (with(p(), "/meeting_id", Some(json!(123))), "samples[0].meeting_id", "must be a string, got a number"),
            (with(p(), "/meeting_id", Some(json!(""))), "samples[0].meeting_id", "must not be empty"),
            (with(p(), "/meeting_id", Some(long(129))), "samples[0].meeting_id", "at most 128 characters"),
            (with(p(), "/meeting_id", Some(json!("a\u{1}b"))), "samples[0].meeting_id", "control characters"),
            (with(p(), "/participant_id", Some(json!("a\u{85}b"))), "samples[0].participant_id", "control characters"),
            (with(p(), "/participant_id", Some(json!(["p1"]))), "samples[0].participant_id", "got an array"),
            (with(p(), "/user_id", Some(json!(""))), "samples[0].user_id", "must not be empty"),
            (with(p(), "/user_name", Some(long(257))), "samples[0].user_name", "at most 256 characters"),
            (with(p(), "/user_name", Some(json!(true))), "samples[0].user_name", "got a boolean"),
            (with(p(), "/meeting_type", Some(json!("seminar"))), "samples[0].meeting_type", "must be one of meeting, webinar"),
            (with(p(), "/timestamp", None), "samples[0].timestamp", "is required"),
            (with(p(), "/timestamp", Some(json!("yesterday"))), "samples[0].timestamp", "RFC 3339"),
            (with(p(), "/timestamp", Some(json!(NOW))), "samples[0].timestamp", "got a number"),
            (with(p(), "/timestamp", Some(json!("2024-01-14T10:29:59.999Z"))), "samples[0].timestamp", "too old"),
            (with(p(), "/timestamp", Some(json!("2024-01-15T10:35:00.001Z"))), "samples[0].timestamp", "in the future"),
            (with(p(), "/metrics", None), "samples[0].metrics", "is required"),
            (with(p(), "/metrics", Some(json!("good"))), "samples[0].metrics", "must be an object, got a string"),
            (with(p(), "/metrics", Some(json!({}))), "samples[0].metrics", "at least one of audio, video, screen_share"),
            (with(p(), "/metrics", Some(json!({"cpu_usage": 5, "audio": null}))), "samples[0].metrics", "at least one of"),
            (with(p(), "/metrics/audio", Some(json!("loud"))), "samples[0].metrics.audio", "must be an object"),
            (with(p(), "/metrics/audio/bitrate", None), "samples[0].metrics.audio.bitrate", "is required"),
            (with(p(), "/metrics/audio/bitrate", Some(json!(100_000.5))), "samples[0].metrics.audio.bitrate", "between 0 and 100000"),
            (with(p(), "/metrics/audio/bitrate", Some(json!(1e308))), "samples[0].metrics.audio.bitrate", "between 0 and 100000"),
            (with(p(), "/metrics/audio/latency", Some(json!(60_001))), "samples[0].metrics.audio.latency", "between 0 and 60000"),
            (with(p(), "/metrics/audio/jitter", Some(json!(-0.1))), "samples[0].metrics.audio.jitter", "between 0 and 60000"),
            (with(p(), "/metrics/audio/packet_loss", Some(json!(101))), "samples[0].metrics.audio.packet_loss", "must be a number between 0 and 100"),
            (with(p(), "/metrics/audio/packet_loss", Some(json!("NaN"))), "samples[0].metrics.audio.packet_loss", "got a string"),
            (with(p(), "/metrics/audio/packet_loss", Some(Value::Null)), "samples[0].metrics.audio.packet_loss", "must not be null"),
            (with(p(), "/metrics/audio/resolution", Some(json!("1280x720"))), "samples[0].metrics.audio.resolution", "not allowed in audio"),
            (with(p(), "/metrics/audio/frame_rate", Some(json!(30))), "samples[0].metrics.audio.frame_rate", "not allowed in audio"),
            (with(p(), "/metrics/cpu_usage", Some(json!(100.1))), "samples[0].metrics.cpu_usage", "between 0 and 100"),
            (with(with_video(), "/metrics/video/resolution", Some(json!("1280x"))), "samples[0].metrics.video.resolution", "like 1280x720"),
            (with(with_video(), "/metrics/video/resolution", Some(json!("123456x1"))), "samples[0].metrics.video.resolution", "like 1280x720"),
            (with(with_video(), "/metrics/video/resolution", Some(json!("12 x 34"))), "samples[0].metrics.video.resolution", "like 1280x720"),
            (with(with_video(), "/metrics/video/resolution", Some(json!(720))), "samples[0].metrics.video.resolution", "got a number"),
            (with(with_video(), "/metrics/video/frame_rate", Some(json!(241))), "samples[0].metrics.video.frame_rate", "between 0 and 240"),
            (with(p(), "/metrics/screen_share", Some(json!({"bitrate": 1, "jitter": 1, "packet_loss": 1}))), "samples[0].metrics.screen_share.latency", "is required"),
            (with(call(), "/call_id", None), "samples[0].call_id", "is required"),
            (with(call(), "/direction", Some(json!("sideways"))), "samples[0].direction", "must be one of inbound, outbound"),
            (with(call(), "/caller_number", Some(json!(5_551_234))), "samples[0].caller_number", "must be a string, got a number"),
            (with(call(), "/callee_number", Some(long(65))), "samples[0].callee_number", "at most 64 characters"),
            (with(call(), "/codec", Some(long(33))), "samples[0].codec", "at most 32 characters"),
            (with(call(), "/metrics/mos", Some(json!(0.99))), "samples[0].metrics.mos", "between 1 and 5"),
            (with(call(), "/metrics/packet_loss", None), "samples[0].metrics.packet_loss", "is required"),
            (with(call(), "/metrics", Some(json!([]))), "samples[0].metrics", "got an array"),
            (json!({"kind": "meeting_ended", "timestamp": minute_ago}), "samples[0].meeting_id", "is required"),
            (json!({"kind": "meeting_ended", "meeting_id": "m1"}), "samples[0].timestamp", "is required"),
            (json!({"kind": "call_ended", "call_id": "c1", "timestamp": minute_ago}), "samples[0].direction", "is required"),
        ];
        for (sample, field, message) in cases {
            let samples = [sample];
            assert_single_error(&json_body(&samples), BodyFormat::Json, field, message);
            assert_single_error(&ndjson_body(&samples), BodyFormat::Ndjson, field, message);
        }
    }

    #[test]
    fn failures_of_the_body_as_a_whole_have_an_empty_field() {
        #[rustfmt::skip]
        let cases: Vec<(&[u8], BodyFormat, &str, &str)> = vec![
            (b"{\"samples\": [", BodyFormat::Json, "", "line 1 column 13"),
            (b"{\"samples\": [{}]} x", BodyFormat::Json, "", "trailing characters"),
            (b"", BodyFormat::Json, "", "invalid JSON"),
            (b"[{}]", BodyFormat::Json, "", "must be a JSON object with a \"samples\" array, got an array"),
            (b"{\"samples\": [1e400]}", BodyFormat::Json, "", "invalid JSON"),
            (b"{\"samples\": [NaN]}", BodyFormat::Json, "", "invalid JSON"),
            (b"{\"samples\": \"all\"}", BodyFormat::Json, "samples", "must be an array of samples, got a string"),
            (b"{\"sample\": []}", BodyFormat::Json, "samples", "is required"),
            (b"{\"samples\": []}", BodyFormat::Json, "samples", "at least one sample"),
            (b"\n \r\n\t\n", BodyFormat::Ndjson, "samples", "at least one sample"),
            (b"{\"samples\": [\"\xff\"]}", BodyFormat::Json, "", "not valid UTF-8 (invalid byte at offset 14)"),
            (b"{}\n\xc3\x28", BodyFormat::Ndjson, "", "not valid UTF-8"),
        ];
        for (body, format, field, message) in cases {
            assert_single_error(body, format, field, message);
        }
    }

    #[test]
    fn a_valid_json_batch_yields_every_sample_in_order() {
        let full = json!({
            "kind": "participant_qos", "meeting_id": "m1", "meeting_type": "webinar",
            "participant_id": "p1", "user_id": "u1", "user_name": "Ada \"the\" Lovelace",
            "timestamp": "2024-01-15T12:29:00.123456789+02:00", "unknown": {"deep": [[1]]},
            "metrics": {
                "audio": {"bitrate": 64, "latency": 80, "jitter": 5, "packet_loss": 0.5, "x": 1},
                "video": {"bitrate": 900, "latency": 81, "jitter": 6, "packet_loss": 1,
                          "resolution": "1280x720", "frame_rate": 29.97},
                "screen_share": null, "cpu_usage": 40,
            },
        });
        let samples = [
            full,
            with(call(), "/metrics/mos", Some(json!(4.2))),
            json!({"kind": "meeting_ended", "meeting_id": "m1", "timestamp": "2024-01-15T10:30:00Z"}),
            json!({"kind": "call_ended", "call_id": "c1", "direction": "outbound",
                   "timestamp": "2024-01-15T10:35:00Z"}),
        ];
        let audio = MediaMetrics {
            bitrate: 64.0,
            latency: 80.0,
            jitter: 5.0,
            packet_loss: 0.5,
            resolution: None,
            frame_rate: None,
        };
        let expected = vec![
            Sample::ParticipantQos(ParticipantQos {
                meeting_id: "m1".into(),
                meeting_type: MeetingType::Webinar,
                participant_id: "p1".into(),
                user_id: Some("u1".into()),
                user_name: Some("Ada \"the\" Lovelace".into()),
                timestamp: NOW - 60_000 + 123,
                metrics: ParticipantMetrics {
                    audio: Some(audio),
                    video: Some(MediaMetrics {
                        bitrate: 900.0,
                        latency: 81.0,
                        jitter: 6.0,
                        packet_loss: 1.0,
                        resolution: Some("1280x720".into()),
                        frame_rate: Some(29.97),
                    }),
                    screen_share: None,
                    cpu_usage: Some(40.0),
                },
            }),
            Sample::CallQos(CallQos {
                call_id: "c1".into(),
                direction: Direction::Inbound,
                caller_number: None,
                callee_number: None,
                codec: None,
                timestamp: NOW - 60_000,
                metrics: CallMetrics {
                    bitrate: 64.0,
                    latency: 80.0,
                    jitter: 5.0,
                    packet_loss: 0.5,
                    mos: Some(4.2),
                },
            }),
            Sample::MeetingEnded(MeetingEnded {
                meeting_id: "m1".into(),
                timestamp: NOW,
            }),
            Sample::CallEnded(CallEnded {
                call_id: "c1".into(),
                direction: Direction::Outbound,
                timestamp: NOW + MAX_FUTURE_MS,
            }),
        ];
        assert_eq!(
            parse(&json_body(&samples), BodyFormat::Json).unwrap(),
            expected
        );
        assert_eq!(
            parse(&ndjson_body(&samples), BodyFormat::Ndjson).unwrap(),
            expected
        );
    }

    #[test]
    fn ids_are_counted_in_characters_not_bytes() {
        let id = "é".repeat(128);
        let sample = with(participant(), "/meeting_id", Some(json!(id)));
        let parsed = parse(&json_body(&[sample]), BodyFormat::Json).unwrap();
        let Sample::ParticipantQos(p) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(p.meeting_id, id);
    }

    #[test]
    fn the_oldest_accepted_timestamp_is_exactly_the_maximum_age() {
        let sample = with(
            participant(),
            "/timestamp",
            Some(json!("2024-01-14T10:30:00Z")),
        );
        let parsed = parse(&json_body(&[sample]), BodyFormat::Json).unwrap();
        assert_eq!(parsed[0].timestamp(), NOW - DAY_MS);
    }

    #[test]
    fn escaped_keys_and_repeated_keys_are_read_like_any_json_parser() {
        let body = br#"{"samples": [{"kind": "meeting_ended", "meeting\u005fid": "m\u00e9",
            "meeting_id": "m2", "timestamp": "2024-01-15T10:30:00Z"}], "samples2": 1}"#;
        let parsed = parse(body, BodyFormat::Json).unwrap();
        assert_eq!(
            parsed,
            vec![Sample::MeetingEnded(MeetingEnded {
                meeting_id: "m2".into(),
                timestamp: NOW
            })]
        );
    }

    #[test]
    fn ndjson_skips_blank_lines_and_numbers_the_others_from_zero() {
        let good = participant().to_string();
        let bad = with(participant(), "/meeting_id", None).to_string();
        let body = format!("\n{good}\r\n   \n\t\n{bad}\n{{\"kind\": \n\n{good}\n\n");
        let errors = errors_of(body.as_bytes(), BodyFormat::Ndjson);
        let fields: Vec<&str> = errors.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["samples[1].meeting_id", "samples[2]"]);
        assert!(
            errors.errors[1].message.starts_with("invalid JSON"),
            "{errors}"
        );

        let body = format!("\n{good}\r\n   \n{good}\n");
        assert_eq!(parse(body.as_bytes(), BodyFormat::Ndjson).unwrap().len(), 2);
    }

    #[test]
    fn every_failure_is_collected_across_samples_and_fields() {
        let bad = with(
            with(participant(), "/meeting_id", None),
            "/metrics/audio/jitter",
            Some(json!(-1)),
        );
        let samples = [participant(), bad, call(), with(call(), "/direction", None)];
        let errors = errors_of(&json_body(&samples), BodyFormat::Json);
        let fields: Vec<&str> = errors.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "samples[1].meeting_id",
                "samples[1].metrics.audio.jitter",
                "samples[3].direction"
            ]
        );
    }

    #[test]
    fn at_most_100_errors_are_listed_and_the_total_is_kept() {
        let bad = with(participant(), "/meeting_id", None);
        let samples = vec![bad; 150];
        let errors = errors_of(&json_body(&samples), BodyFormat::Json);
        assert_eq!(errors.errors.len(), 100);
        assert_eq!(errors.total, 150);
        assert_eq!(errors.errors[99].field, "samples[99].meeting_id");
        assert!(
            errors.message().contains("150 errors"),
            "{}",
            errors.message()
        );
    }

    #[test]
    fn more_samples_than_the_limit_is_refused_before_they_are_checked() {
        let limits = IngestLimits {
            max_samples: 10,
            ..LIMITS
        };
        let invalid = vec![json!({}); 11];
        for (body, format) in [
            (json_body(&invalid), BodyFormat::Json),
            (ndjson_body(&invalid), BodyFormat::Ndjson),
        ] {
            let outcome = parse_batch(&body, format, NOW, &limits);
            assert!(
                matches!(
                    outcome,
                    Err(IngestError::TooManySamples { count: 11, max: 10 })
                ),
                "{outcome:?}"
            );
        }
        let ten = vec![participant(); 10];
        assert_eq!(
            parse_batch(&json_body(&ten), BodyFormat::Json, NOW, &limits)
                .unwrap()
                .len(),
            10
        );
    }

    #[test]
    fn a_huge_array_of_samples_is_counted_without_being_stored() {
        let body = format!("{{\"samples\": [{}0]}}", "0,".repeat(999_999));
        let outcome = parse(body.as_bytes(), BodyFormat::Json);
        assert!(
            matches!(
                outcome,
                Err(IngestError::TooManySamples {
                    count: 1_000_000,
                    max: 10_000
                })
            ),
            "{outcome:?}"
        );
    }

    /// A valid sample whose `unknown` member holds `arrays` nested arrays.
    fn nested_sample(arrays: usize) -> String {
        format!(
            r#"{{"kind": "meeting_ended", "meeting_id": "m1", "timestamp": "2024-01-15T10:30:00Z", "unknown": {}{}}}"#,
            "[".repeat(arrays),
            "]".repeat(arrays)
        )
    }

    #[test]
    fn nesting_of_64_levels_is_accepted_and_65_is_refused() {
        // The batch object and the samples array are two levels, the sample object one more.
        let json = |arrays| format!(r#"{{"samples": [{}]}}"#, nested_sample(arrays));
        assert!(parse(json(61).as_bytes(), BodyFormat::Json).is_ok());
        assert_single_error(json(62).as_bytes(), BodyFormat::Json, "", "deeper than 64");

        let ndjson = |arrays| format!("{}\n{}", nested_sample(1), nested_sample(arrays));
        assert!(parse(ndjson(63).as_bytes(), BodyFormat::Ndjson).is_ok());
        assert_single_error(
            ndjson(64).as_bytes(),
            BodyFormat::Ndjson,
            "",
            "deeper than 64",
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let name = format!("\\\"{}", "[{".repeat(60));
        let body = format!(
            r#"{{"samples": [{{"kind": "meeting_ended", "meeting_id": "{name}",
                "timestamp": "2024-01-15T10:30:00Z"}}]}}"#
        );
        let parsed = parse(body.as_bytes(), BodyFormat::Json).unwrap();
        let Sample::MeetingEnded(ended) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(ended.meeting_id, format!("\"{}", "[{".repeat(60)));
    }

    #[test]
    fn ten_thousand_levels_of_nesting_are_refused_quickly() {
        let started = std::time::Instant::now();
        for body in ["[".repeat(10_000), "{\"a\":".repeat(10_000)] {
            for format in [BodyFormat::Json, BodyFormat::Ndjson] {
                assert_single_error(body.as_bytes(), format, "", "deeper than 64");
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    // Property tests.

    /// A number in `min..=max` with three decimals, which JSON carries exactly both ways.
    fn metric(min: f64, max: f64) -> impl Strategy<Value = f64> {
        ((min * 1000.0) as i64..=(max * 1000.0) as i64).prop_map(|n| n as f64 / 1000.0)
    }

    fn name(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[a-zA-Z0-9 _/\\\\\"é漢😀-]{{1,{max}}}")).unwrap()
    }

    fn timestamp() -> impl Strategy<Value = Millis> {
        NOW - DAY_MS..=NOW + MAX_FUTURE_MS
    }

    fn media(audio: bool) -> impl Strategy<Value = MediaMetrics> {
        let resolution = proptest::option::of("[0-9]{1,5}x[0-9]{1,5}");
        let frame_rate = proptest::option::of(metric(0.0, 240.0));
        let extras = if audio {
            Just((None, None)).boxed()
        } else {
            (resolution, frame_rate).boxed()
        };
        let network = (
            metric(0.0, 100_000.0),
            metric(0.0, 60_000.0),
            metric(0.0, 60_000.0),
            metric(0.0, 100.0),
        );
        (network, extras).prop_map(|((bitrate, latency, jitter, packet_loss), extras)| {
            MediaMetrics {
                bitrate,
                latency,
                jitter,
                packet_loss,
                resolution: extras.0,
                frame_rate: extras.1,
            }
        })
    }

    fn participant_metrics() -> impl Strategy<Value = ParticipantMetrics> {
        let groups = (
            proptest::option::of(media(true)),
            proptest::option::of(media(false)),
            proptest::option::of(media(false)),
        );
        (groups, proptest::option::of(metric(0.0, 100.0)))
            .prop_filter("at least one group", |((a, v, s), _)| {
                a.is_some() || v.is_some() || s.is_some()
            })
            .prop_map(
                |((audio, video, screen_share), cpu_usage)| ParticipantMetrics {
                    audio,
                    video,
                    screen_share,
                    cpu_usage,
                },
            )
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Inbound), Just(Direction::Outbound)]
    }

    fn sample() -> impl Strategy<Value = Sample> {
        let meeting_type = prop_oneof![Just(MeetingType::Meeting), Just(MeetingType::Webinar)];
        let participant = (
            (name(40), meeting_type, name(40)),
            (
                proptest::option::of(name(40)),
                proptest::option::of(name(80)),
            ),
            timestamp(),
            participant_metrics(),
        )
            .prop_map(
                |(
                    (meeting_id, meeting_type, participant_id),
                    (user_id, user_name),
                    timestamp,
                    metrics,
                )| {
                    Sample::ParticipantQos(ParticipantQos {
                        meeting_id,
                        meeting_type,
                        participant_id,
                        user_id,
                        user_name,
                        timestamp,
                        metrics,
                    })
                },
            );
        let call_metrics =
            (media(true), proptest::option::of(metric(1.0, 5.0))).prop_map(|(m, mos)| {
                CallMetrics {
                    bitrate: m.bitrate,
                    latency: m.latency,
                    jitter: m.jitter,
                    packet_loss: m.packet_loss,
                    mos,
                }
            });
        let numbers = (
            proptest::option::of("[0-9+]{0,64}"),
            proptest::option::of("[0-9+]{0,64}"),
            proptest::option::of(name(32)),
        );
        let call = (name(40), direction(), numbers, timestamp(), call_metrics).prop_map(
            |(call_id, direction, (caller_number, callee_number, codec), timestamp, metrics)| {
                Sample::CallQos(CallQos {
                    call_id,
                    direction,
                    caller_number,
                    callee_number,
                    codec,
                    timestamp,
                    metrics,
                })
            },
        );
        let meeting_ended = (name(128), timestamp()).prop_map(|(meeting_id, timestamp)| {
            Sample::MeetingEnded(MeetingEnded {
                meeting_id,
                timestamp,
            })
        });
        let call_ended =
            (name(40), direction(), timestamp()).prop_map(|(call_id, direction, timestamp)| {
                Sample::CallEnded(CallEnded {
                    call_id,
                    direction,
                    timestamp,
                })
            });
        prop_oneof![participant, call, meeting_ended, call_ended]
    }

    /// The sample as a client sends it: the stored form with an RFC 3339 timestamp in the given
    /// offset instead of epoch milliseconds.
    fn wire(sample: &Sample, offset_hours: i8) -> Value {
        let offset = UtcOffset::from_hms(offset_hours, 0, 0).unwrap();
        let at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(sample.timestamp()) * 1_000_000)
                .unwrap()
                .to_offset(offset);
        let mut value = serde_json::to_value(sample).unwrap();
        value["timestamp"] = json!(at.format(&Rfc3339).unwrap());
        value
    }

    proptest! {
        #[test]
        fn valid_samples_round_trip(
            samples in proptest::collection::vec(sample(), 1..20),
            offset_hours in -12i8..=14,
        ) {
            let wire: Vec<Value> = samples.iter().map(|s| wire(s, offset_hours)).collect();
            prop_assert_eq!(&parse(&json_body(&wire), BodyFormat::Json).unwrap(), &samples);
            prop_assert_eq!(&parse(&ndjson_body(&wire), BodyFormat::Ndjson).unwrap(), &samples);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&body, BodyFormat::Json);
            let _ = parse(&body, BodyFormat::Ndjson);
        }

        #[test]
        fn arbitrary_json_like_text_never_panics(
            body in "[\\[\\]{}\",:. \n0-9eE+-]{0,200}|\\{\"samples\": \\[[\\[\\]{}\",: a-z0-9.-]{0,200}",
        ) {
            let _ = parse(body.as_bytes(), BodyFormat::Json);
            let _ = parse(body.as_bytes(), BodyFormat::Ndjson);
        }

        #[test]
        fn mutated_valid_samples_never_panic(
            sample in sample(),
            cut in 0usize..2000,
            replacement in "[\\[\\]{}\",:0-9a-z\\\\ ]{0,3}",
        ) {
            let text = json_body(&[wire(&sample, 0)]);
            let text = String::from_utf8(text).unwrap();
            let mut cut = cut.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let mutated = format!("{}{replacement}{}", &text[..cut], &text[cut..]);
            let _ = parse(mutated.as_bytes(), BodyFormat::Json);
        }
    }
}
