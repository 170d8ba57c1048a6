//! The JavaScript-canonical form of a webhook body (SPEC 7.3): the bytes of
//! `JSON.stringify(JSON.parse(body))`.
//!
//! Zoom's own receivers (its Node SDK and webhook sample) verify `x-zm-signature` over the
//! re-serialised body rather than the raw bytes, so qss must send bytes that survive that round
//! trip unchanged. [`canonicalize`] computes them; [`is_js_canonical`] checks a body already is.
//!
//! What `JSON.stringify` does, and how it is reproduced here:
//! - no whitespace;
//! - numbers as ECMAScript `Number::toString` (shortest round-trip digits, `64` not `64.0`, `-0` as
//!   `0`, exponent form `1e+21` / `1e-7` outside [1e-6, 1e21), `Infinity` as `null`);
//! - strings escaped only for `"`, `\`, `\b \f \n \r \t` and other U+0000..U+001F as `\u00xx` in
//!   lower case, which is exactly serde_json's escaping, so serde_json writes them;
//! - object keys in insertion order, except that keys that are array indices (`"0"`, `"17"`, ...)
//!   come first in numeric order; a duplicate key keeps its first position and its last value.
//!   qss never produces index-like keys or duplicates, but they are reproduced anyway so the check
//!   is exact for any input.
//!
//! Numbers are re-parsed from their source text with Rust's correctly rounded `f64` parser (the
//! text is captured with serde_json's `RawValue`), because serde_json's default float parser is
//! best-effort and may be one ulp off for long inputs, where `JSON.parse` is exact. Each nesting
//! level re-reads its own text, which costs O(size × depth): negligible for webhook bodies.
//!
//! Known difference: JavaScript keeps lone surrogates (`"\ud800"`), which Rust strings cannot
//! hold; such bodies are rejected with an error. qss never produces them.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The bytes `JSON.stringify(JSON.parse(body))` would produce, or the parse error for a body that
/// is not JSON.
pub fn canonicalize(body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let raw: &RawValue = serde_json::from_slice(body)?;
    let mut out = Vec::with_capacity(body.len());
    write_value(raw.get(), &mut out)?;
    Ok(out)
}

/// Whether `body` already equals `JSON.stringify(JSON.parse(body))`, i.e. whether Zoom's
/// receivers will verify a signature computed over it. A body that is not JSON is not canonical.
pub fn is_js_canonical(body: &[u8]) -> bool {
    canonicalize(body).is_ok_and(|canonical| canonical == body)
}

/// Writes one JSON value given by its (already validated) source text.
fn write_value(text: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let text = text.trim_matches([' ', '\t', '\n', '\r']);
    match text.as_bytes().first() {
        Some(b'{') => {
            let Entries(entries) = serde_json::from_str(text)?;
            out.push(b'{');
            for (i, (key, value)) in js_key_order(entries).into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &key)?;
                out.push(b':');
                write_value(value.get(), out)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item.get(), out)?;
            }
            out.push(b']');
        }
        Some(b'"') => {
            let s: String = serde_json::from_str(text)?;
            serde_json::to_writer(&mut *out, &s)?;
        }
        // `true`, `false` and `null` are already in their only form.
        Some(b't' | b'f' | b'n') => out.extend_from_slice(text.as_bytes()),
        _ => {
            // serde_json validated the syntax; Rust's grammar for f64 is a superset of JSON's, and
            // out-of-range literals become ±infinity exactly as in JavaScript.
            let x: f64 = text.parse().map_err(serde::de::Error::custom)?;
            write_js_number(x, out);
        }
    }
    Ok(())
}

/// An object's members in source order, with duplicates resolved the way `JSON.parse` does.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for EntriesVisitor<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries: Vec<(String, &'a RawValue)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'a RawValue>()? {
                    // A repeated key overwrites the value but keeps the first position, as
                    // assigning to an existing property does in JavaScript.
                    match entries.iter_mut().find(|(k, _)| *k == key) {
                        Some(existing) => existing.1 = value,
                        None => entries.push((key, value)),
                    }
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

/// JavaScript's own-property order: array-index keys ascending, then the rest in insertion order.
fn js_key_order<V>(entries: Vec<(String, V)>) -> Vec<(String, V)> {
    let (mut indices, others): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(key, _)| array_index(key).is_some());
    indices.sort_by_key(|(key, _)| array_index(key));
    indices.extend(others);
    indices
}

/// The value of a key that is an array index: the canonical decimal form of an integer in
/// 0..=2^32-2 (so `"01"`, `"-1"` and `"4294967295"` are ordinary keys).
fn array_index(key: &str) -> Option<u32> {
    let canonical = key == "0" || (key.starts_with(|c: char| matches!(c, '1'..='9')));
    if !canonical || key.len() > 10 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u64>()
        .ok()
        .filter(|&n| n < u64::from(u32::MAX))
        .map(|n| n as u32)
}

/// Writes `x` as ECMAScript's `Number::toString(x)`, which `JSON.stringify` uses for finite
/// numbers (non-finite ones become `null`).
///
/// Rust's `{:e}` formatting yields the shortest digit string that round-trips, the same digits
/// ECMAScript requires (both pick the closest such string); only the layout differs, and the
/// layout rules below are those of the ECMAScript specification, with `k` digits and the decimal
/// point after `n` of them.
fn write_js_number(x: f64, out: &mut Vec<u8>) {
    if !x.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    if x == 0.0 {
        // Covers -0, which JavaScript prints as `0`.
        out.push(b'0');
        return;
    }
    if x < 0.0 {
        out.push(b'-');
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exponent.parse::<i32>().unwrap_or(0) + 1;
    let s = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let sign = if n - 1 < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        format!("{first}{point}{rest}e{sign}{}", (n - 1).abs())
    };
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(body: &str) -> String {
        String::from_utf8(canonicalize(body.as_bytes()).expect("valid json")).expect("utf-8")
    }

    fn number(x: f64) -> String {
        let mut out = Vec::new();
        write_js_number(x, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn numbers_are_written_as_javascript_writes_them() {
        for (x, js) in [
            (64.0, "64"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e20, "100000000000000000000"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (1e-6, "0.000001"),
            (1.5e-6, "0.0000015"),
            (1e-7, "1e-7"),
            (-1.25e-7, "-1.25e-7"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (2432232314.0, "2432232314"),
            (9_007_199_254_740_993.0, "9007199254740992"),
            (f64::INFINITY, "null"),
        ] {
            assert_eq!(number(x), js, "{x:e}");
        }
    }

    #[test]
    fn whitespace_is_removed_and_whole_numbers_lose_their_fraction() {
        assert_eq!(
            canon(" { \"a\" : [ 1 , 64.0 , -0 , -0.0, 1E2, 1e400 ] ,\n\"b\":true } "),
            r#"{"a":[1,64,0,0,100,null],"b":true}"#
        );
    }

    #[test]
    fn integers_beyond_two_to_the_53_are_rounded_like_javascript_doubles() {
        assert_eq!(canon("[18446744073709551615]"), "[18446744073709552000]");
        assert_eq!(canon("[12345678901234567890]"), "[12345678901234567000]");
    }

    #[test]
    fn strings_are_escaped_only_where_json_stringify_escapes() {
        assert_eq!(
            canon(r#"["\/ é \u00e9 \u2028 \u007f \u0001 \u001F \b\f\n\r\t \" \\ 😀"]"#),
            "[\"/ é é \u{2028} \u{7f} \\u0001 \\u001f \\b\\f\\n\\r\\t \\\" \\\\ 😀\"]"
        );
    }

    #[test]
    fn keys_keep_insertion_order_but_array_indices_come_first_ascending() {
        assert_eq!(
            canon(r#"{"b":1,"a":2,"10":3,"2":4,"01":5,"-1":6,"4294967295":7}"#),
            r#"{"2":4,"10":3,"b":1,"a":2,"01":5,"-1":6,"4294967295":7}"#
        );
    }

    #[test]
    fn a_duplicate_key_keeps_its_first_position_and_last_value() {
        assert_eq!(canon(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
    }

    #[test]
    fn a_compact_body_from_serde_json_is_canonical() {
        let body = r#"{"event":"qss.meeting_qos_summary","event_ts":1700000000123,"payload":{"mos":4.25,"loss":0,"name":"Zoë \"Q\""}}"#;
        assert!(is_js_canonical(body.as_bytes()));
    }

    #[test]
    fn bodies_that_javascript_would_rewrite_are_not_canonical() {
        for body in [
            r#"{"mos":64.0}"#,
            r#"{"a": 1}"#,
            r#"{"a":-0}"#,
            r#"{"a":"\/"}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":1e21}"#,
            r#"{"b":1,"1":2}"#,
            "not json",
        ] {
            assert!(!is_js_canonical(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn a_lone_surrogate_is_rejected_rather_than_silently_changed() {
        assert!(canonicalize(br#"["\ud800"]"#).is_err());
    }

    /// Compares with the real thing. Skipped (with a note) where `node` is not installed.
    #[test]
    fn canonical_bytes_equal_what_node_json_stringify_produces() {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;

        let bodies: &[&str] = &[
            r#"{"ctl":"\u0000\u0007\b\t\n\u000b\f\r\u001b\u001f\u007f","q":"\"\\/"}"#,
            r#"{"u":"é 日本 😀 \u2028\u2029 \ufeff","emoji\ud83d\ude00":1}"#,
            "[1e21, 1e20, 1.5e21, 1e-6, 1e-7, 1.234e-7, 5e-324, 1.7976931348623157e308, 1e400]",
            "[0.1, 0.2, 0.30000000000000004, 0.1e1, 100.0, -0, -0.0, 0.0, -1.5, 2.675]",
            "[9007199254740993, 18446744073709551615, 123456789012345678901234567890]",
            "[0.000001234, 123456.789e3, 4.35, 99.99, 1.005, 3.0000000000000004]",
            r#"{"b":1,"a":{"z":[],"y":{}},"10":2,"2":3,"01":4,"a":5}"#,
            " [ true , false , null , \"x\" ] ",
        ];
        let encoded: Vec<String> = bodies.iter().map(|b| STANDARD.encode(b)).collect();
        let script = "for (const b of process.argv.slice(1)) { \
             const s = JSON.stringify(JSON.parse(Buffer.from(b, 'base64').toString('utf8'))); \
             console.log(Buffer.from(s, 'utf8').toString('base64')); }";
        let output = match std::process::Command::new("node")
            .arg("-e")
            .arg(script)
            .args(&encoded)
            .output()
        {
            Ok(output) => output,
            Err(e) => {
                eprintln!("note: skipping the comparison with node ({e})");
                return;
            }
        };
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        let expected: Vec<&str> = stdout.lines().collect();
        assert_eq!(expected.len(), bodies.len());
        for (body, js) in bodies.iter().zip(expected) {
            let js = String::from_utf8(STANDARD.decode(js).expect("base64")).expect("utf-8");
            assert_eq!(canon(body), js, "body {body}");
            assert!(is_js_canonical(js.as_bytes()), "node output {js}");
        }
    }
}
