//! The rules of SPEC 4 for one sample: each field is checked and every failure recorded with
//! its path, then the checked values are combined into a [`Sample`].

use std::borrow::Cow;

use super::tree::Node;
use super::{IngestLimits, MAX_FUTURE_MS};
use crate::sample::{
    CallEnded, CallMetrics, CallQos, Direction, MediaMetrics, MeetingEnded, MeetingType,
    ParticipantMetrics, ParticipantQos, Sample,
};
use crate::timefmt::{Millis, parse_datetime};
use crate::validation::ValidationErrors;

const MAX_ID_CHARS: usize = 128;
const MAX_USER_NAME_CHARS: usize = 256;
const MAX_NUMBER_CHARS: usize = 64;
const MAX_CODEC_CHARS: usize = 32;

type Fields<'n, 'a> = &'n [(Cow<'a, str>, Node<'a>)];

/// The members of one JSON object and its path inside the sample (`""`, `"metrics"`,
/// `"metrics.audio"`...), used to name bad fields.
#[derive(Clone, Copy)]
struct Obj<'n, 'a> {
    fields: Fields<'n, 'a>,
    path: &'static str,
}

impl<'n, 'a> Obj<'n, 'a> {
    /// The member named `key`; the last one wins when a key repeats, as in most JSON parsers.
    fn get(self, key: &str) -> Option<&'n Node<'a>> {
        let found = self.fields.iter().rev().find(|(k, _)| k == key);
        found.map(|(_, value)| value)
    }

    /// Whether `key` holds something other than `null`.
    fn has(self, key: &str) -> bool {
        !matches!(self.get(key), None | Some(Node::Null))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    ParticipantQos,
    CallQos,
    MeetingEnded,
    CallEnded,
}

const KINDS: [(&str, Kind); 4] = [
    ("participant_qos", Kind::ParticipantQos),
    ("call_qos", Kind::CallQos),
    ("meeting_ended", Kind::MeetingEnded),
    ("call_ended", Kind::CallEnded),
];
const DIRECTIONS: [(&str, Direction); 2] = [
    ("inbound", Direction::Inbound),
    ("outbound", Direction::Outbound),
];
const MEETING_TYPES: [(&str, MeetingType); 2] = [
    ("meeting", MeetingType::Meeting),
    ("webinar", MeetingType::Webinar),
];

/// The accepted range of timestamps, fixed by the clock at receipt.
#[derive(Clone, Copy)]
struct Window {
    earliest: Millis,
    latest: Millis,
    max_age_ms: i64,
}

impl Window {
    fn check(self, node: &Node<'_>) -> Result<Millis, String> {
        let parsed = match node {
            Node::String(s) => parse_datetime(s),
            _ => None,
        };
        let Some(ts) = parsed else {
            return Err(format!(
                "must be an RFC 3339 date-time string such as 2024-01-15T10:30:00Z{}",
                got(node)
            ));
        };
        if ts < self.earliest {
            return Err(format!(
                "is too old: it must be at most {} seconds before the server's time",
                self.max_age_ms / 1000
            ));
        }
        if ts > self.latest {
            return Err(format!(
                "is in the future: it must be at most {} seconds after the server's time",
                MAX_FUTURE_MS / 1000
            ));
        }
        Ok(ts)
    }
}

/// Checks samples one by one, collecting every failure with its path.
pub(super) struct Checker {
    window: Window,
    /// Index of the sample being checked, for paths.
    pub(super) index: usize,
    pub(super) errors: ValidationErrors,
}

impl Checker {
    pub(super) fn new(now: Millis, limits: &IngestLimits) -> Self {
        let window = Window {
            earliest: now.saturating_sub(limits.max_sample_age_ms),
            latest: now.saturating_add(MAX_FUTURE_MS),
            max_age_ms: limits.max_sample_age_ms,
        };
        Checker {
            window,
            index: 0,
            errors: ValidationErrors::new(),
        }
    }

    /// Records a failure at `samples[i].<parent>.<key>`; either part may be empty.
    pub(super) fn fail(&mut self, parent: &str, key: &str, message: impl Into<String>) {
        let i = self.index;
        let field = match (parent, key) {
            ("", "") => format!("samples[{i}]"),
            ("", k) | (k, "") => format!("samples[{i}].{k}"),
            (p, k) => format!("samples[{i}].{p}.{k}"),
        };
        self.errors.push(field, message);
    }

    fn record<T>(&mut self, obj: Obj<'_, '_>, key: &str, outcome: Result<T, String>) -> Option<T> {
        outcome
            .map_err(|message| self.fail(obj.path, key, message))
            .ok()
    }

    /// A member that must be present and not `null`; `None` once its failure is recorded.
    fn required<'n, 'a, T>(
        &mut self,
        obj: Obj<'n, 'a>,
        key: &str,
        check: impl FnOnce(&'n Node<'a>) -> Result<T, String>,
    ) -> Option<T> {
        let outcome = match obj.get(key) {
            None => Err("is required".to_string()),
            Some(Node::Null) => Err("is required and must not be null".to_string()),
            Some(node) => check(node),
        };
        self.record(obj, key, outcome)
    }

    /// A member that may be absent or `null` (`Some(None)`); `None` once its failure is recorded.
    fn optional<'n, 'a, T>(
        &mut self,
        obj: Obj<'n, 'a>,
        key: &str,
        check: impl FnOnce(&'n Node<'a>) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match obj.get(key) {
            None | Some(Node::Null) => Some(None),
            Some(node) => {
                let outcome = check(node);
                self.record(obj, key, outcome).map(Some)
            }
        }
    }

    pub(super) fn sample(&mut self, node: &Node<'_>) -> Option<Sample> {
        let Node::Object(fields) = node else {
            self.fail(
                "",
                "",
                format!("must be an object, got {}", node.describe()),
            );
            return None;
        };
        let obj = Obj { fields, path: "" };
        // Without a kind nothing else can be checked.
        match self.required(obj, "kind", |n| one_of(n, &KINDS))? {
            Kind::ParticipantQos => self.participant_qos(obj).map(Sample::ParticipantQos),
            Kind::CallQos => self.call_qos(obj).map(Sample::CallQos),
            Kind::MeetingEnded => self.meeting_ended(obj).map(Sample::MeetingEnded),
            Kind::CallEnded => self.call_ended(obj).map(Sample::CallEnded),
        }
    }

    // Each kind checks every field before combining them, so that all failures are recorded.

    fn participant_qos(&mut self, obj: Obj<'_, '_>) -> Option<ParticipantQos> {
        let window = self.window;
        let meeting_id = self.required(obj, "meeting_id", id);
        let meeting_type = self.optional(obj, "meeting_type", |n| one_of(n, &MEETING_TYPES));
        let participant_id = self.required(obj, "participant_id", id);
        let user_id = self.optional(obj, "user_id", id);
        let user_name = self.optional(obj, "user_name", |n| text(n, MAX_USER_NAME_CHARS));
        let timestamp = self.required(obj, "timestamp", |n| window.check(n));
        let metrics = self
            .required(obj, "metrics", object)
            .and_then(|fields| self.participant_metrics(fields));
        Some(ParticipantQos {
            meeting_id: meeting_id?,
            meeting_type: meeting_type?.unwrap_or_default(),
            participant_id: participant_id?,
            user_id: user_id?,
            user_name: user_name?,
            timestamp: timestamp?,
            metrics: metrics?,
        })
    }

    fn participant_metrics(&mut self, fields: Fields<'_, '_>) -> Option<ParticipantMetrics> {
        let obj = Obj {
            fields,
            path: "metrics",
        };
        let audio = self.media_group(obj, "audio", "metrics.audio");
        let video = self.media_group(obj, "video", "metrics.video");
        let screen_share = self.media_group(obj, "screen_share", "metrics.screen_share");
        let cpu_usage = self.optional(obj, "cpu_usage", |n| number(n, 0.0, 100.0));
        if !(obj.has("audio") || obj.has("video") || obj.has("screen_share")) {
            self.fail(
                "",
                "metrics",
                "must hold at least one of audio, video, screen_share",
            );
            return None;
        }
        Some(ParticipantMetrics {
            audio: audio?,
            video: video?,
            screen_share: screen_share?,
            cpu_usage: cpu_usage?,
        })
    }

    /// `audio`, `video` or `screen_share`: optional, but an object with all four network
    /// metrics when present. Only video and screen share carry `resolution` and `frame_rate`.
    fn media_group(
        &mut self,
        metrics: Obj<'_, '_>,
        key: &str,
        path: &'static str,
    ) -> Option<Option<MediaMetrics>> {
        let Some(fields) = self.optional(metrics, key, object)? else {
            return Some(None);
        };
        let obj = Obj { fields, path };
        let audio = key == "audio";
        let network = self.network(obj);
        let resolution = self.optional(obj, "resolution", |n| {
            if audio {
                Err("is not allowed in audio".to_string())
            } else {
                resolution(n)
            }
        });
        let frame_rate = self.optional(obj, "frame_rate", |n| {
            if audio {
                Err("is not allowed in audio".to_string())
            } else {
                number(n, 0.0, 240.0)
            }
        });
        let network = network?;
        Some(Some(MediaMetrics {
            bitrate: network.bitrate,
            latency: network.latency,
            jitter: network.jitter,
            packet_loss: network.packet_loss,
            resolution: resolution?,
            frame_rate: frame_rate?,
        }))
    }

    fn call_qos(&mut self, obj: Obj<'_, '_>) -> Option<CallQos> {
        let window = self.window;
        let call_id = self.required(obj, "call_id", id);
        let direction = self.required(obj, "direction", |n| one_of(n, &DIRECTIONS));
        let caller_number = self.optional(obj, "caller_number", |n| text(n, MAX_NUMBER_CHARS));
        let callee_number = self.optional(obj, "callee_number", |n| text(n, MAX_NUMBER_CHARS));
        let codec = self.optional(obj, "codec", |n| text(n, MAX_CODEC_CHARS));
        let timestamp = self.required(obj, "timestamp", |n| window.check(n));
        let metrics = self
            .required(obj, "metrics", object)
            .and_then(|fields| self.call_metrics(fields));
        Some(CallQos {
            call_id: call_id?,
            direction: direction?,
            caller_number: caller_number?,
            callee_number: callee_number?,
            codec: codec?,
            timestamp: timestamp?,
            metrics: metrics?,
        })
    }

    fn call_metrics(&mut self, fields: Fields<'_, '_>) -> Option<CallMetrics> {
        let obj = Obj {
            fields,
            path: "metrics",
        };
        let network = self.network(obj);
        let mos = self.optional(obj, "mos", |n| number(n, 1.0, 5.0));
        let network = network?;
        Some(CallMetrics {
            bitrate: network.bitrate,
            latency: network.latency,
            jitter: network.jitter,
            packet_loss: network.packet_loss,
            mos: mos?,
        })
    }

    /// The four metrics every media group and call carries.
    fn network(&mut self, obj: Obj<'_, '_>) -> Option<Network> {
        let bitrate = self.required(obj, "bitrate", |n| number(n, 0.0, 100_000.0));
        let latency = self.required(obj, "latency", |n| number(n, 0.0, 60_000.0));
        let jitter = self.required(obj, "jitter", |n| number(n, 0.0, 60_000.0));
        let packet_loss = self.required(obj, "packet_loss", |n| number(n, 0.0, 100.0));
        Some(Network {
            bitrate: bitrate?,
            latency: latency?,
            jitter: jitter?,
            packet_loss: packet_loss?,
        })
    }

    fn meeting_ended(&mut self, obj: Obj<'_, '_>) -> Option<MeetingEnded> {
        let window = self.window;
        let meeting_id = self.required(obj, "meeting_id", id);
        let timestamp = self.required(obj, "timestamp", |n| window.check(n));
        Some(MeetingEnded {
            meeting_id: meeting_id?,
            timestamp: timestamp?,
        })
    }

    fn call_ended(&mut self, obj: Obj<'_, '_>) -> Option<CallEnded> {
        let window = self.window;
        let call_id = self.required(obj, "call_id", id);
        let direction = self.required(obj, "direction", |n| one_of(n, &DIRECTIONS));
        let timestamp = self.required(obj, "timestamp", |n| window.check(n));
        Some(CallEnded {
            call_id: call_id?,
            direction: direction?,
            timestamp: timestamp?,
        })
    }
}

struct Network {
    bitrate: f64,
    latency: f64,
    jitter: f64,
    packet_loss: f64,
}

/// `", got a string"` when the value has the wrong type, for messages that state the right one.
fn got(node: &Node<'_>) -> String {
    format!(", got {}", node.describe())
}

fn object<'n, 'a>(node: &'n Node<'a>) -> Result<Fields<'n, 'a>, String> {
    match node {
        Node::Object(fields) => Ok(fields),
        other => Err(format!("must be an object{}", got(other))),
    }
}

/// A finite number within `min..=max`. serde_json refuses NaN, infinities and numbers beyond
/// `f64`, so any number here is finite.
fn number(node: &Node<'_>, min: f64, max: f64) -> Result<f64, String> {
    match node {
        // Adding zero turns -0 into 0.
        Node::Number(x) if (min..=max).contains(x) => Ok(*x + 0.0),
        Node::Number(_) => Err(format!("must be a number between {min} and {max}")),
        other => Err(format!(
            "must be a number between {min} and {max}{}",
            got(other)
        )),
    }
}

/// An id: 1..128 characters without control characters.
fn id(node: &Node<'_>) -> Result<String, String> {
    match node {
        Node::String(s) if s.is_empty() => Err(format!(
            "must not be empty: ids are 1 to {MAX_ID_CHARS} characters long"
        )),
        _ => text(node, MAX_ID_CHARS),
    }
}

/// A string of at most `max_chars` characters (not bytes) without control characters.
fn text(node: &Node<'_>, max_chars: usize) -> Result<String, String> {
    let Node::String(s) = node else {
        return Err(format!("must be a string{}", got(node)));
    };
    // A string's byte length bounds its character count, so most strings are never counted.
    if s.len() > max_chars && s.chars().count() > max_chars {
        return Err(format!("must be at most {max_chars} characters long"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".to_string());
    }
    Ok(s.to_string())
}

/// `<width>x<height>`, each 1 to 5 ASCII digits.
fn resolution(node: &Node<'_>) -> Result<String, String> {
    let digits =
        |part: &str| (1..=5).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
    match node {
        Node::String(s)
            if s.split_once('x')
                .is_some_and(|(w, h)| digits(w) && digits(h)) =>
        {
            Ok(s.to_string())
        }
        Node::String(_) => Err("must look like 1280x720 (width x height in pixels)".to_string()),
        other => Err(format!("must be a string such as 1280x720{}", got(other))),
    }
}

fn one_of<T: Copy>(node: &Node<'_>, options: &[(&str, T)]) -> Result<T, String> {
    if let Node::String(s) = node
        && let Some((_, value)) = options.iter().find(|(name, _)| name == s)
    {
        return Ok(*value);
    }
    let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
    let found = match node {
        Node::String(_) => String::new(),
        other => got(other),
    };
    Err(format!("must be one of {}{found}", names.join(", ")))
}
