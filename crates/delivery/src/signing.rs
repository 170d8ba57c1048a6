//! Webhook signatures (SPEC 7.3), the URL-validation handshake (7.2) and secret generation (7.1).
//!
//! Every request is signed twice, once per convention, so that receivers written for Zoom and
//! receivers using the Standard Webhooks libraries both verify it without configuration. All
//! signatures are computed over the exact body bytes that are sent; callers make those bytes
//! JavaScript-canonical first (see [`crate::canonical`]), because Zoom's receivers verify over
//! `JSON.stringify` of the parsed body.

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of Standard Webhooks secrets; what follows it is the base64 of the key bytes.
const WHSEC_PREFIX: &str = "whsec_";

/// Standard Webhooks libraries differ on whether the key's base64 carries padding; accepting both
/// costs nothing and avoids rejecting a secret a user copied from another system.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An HMAC-SHA256 state keyed with `key`. HMAC accepts keys of any length, so this cannot fail.
fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("hmac accepts keys of any length")
}

/// `x-zm-signature`: `v0=` + lowercase hex HMAC-SHA256(key = secret as UTF-8,
/// message = `v0:{timestamp}:{body}`).
pub fn zoom_signature(secret: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(format!("v0:{timestamp_secs}:").as_bytes());
    m.update(body);
    format!("v0={}", hex::encode(m.finalize().into_bytes()))
}

/// The HMAC key the Standard Webhooks convention derives from a secret: the base64-decoded part
/// after `whsec_`, or the secret's UTF-8 bytes when it has no such prefix (receivers using the
/// standard libraries then pass the secret as raw bytes). A `whsec_` secret whose remainder is not
/// base64 also falls back to its UTF-8 bytes, so signing never fails; the API refuses such
/// secrets up front with [`secret_is_well_formed`].
fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(WHSEC_PREFIX)
        .and_then(|b64| LENIENT_BASE64.decode(b64).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// Whether a user-supplied secret can be used as the Standard Webhooks key the way receivers will
/// read it: a `whsec_` prefix must be followed by valid, non-empty standard base64.
pub fn secret_is_well_formed(secret: &str) -> bool {
    match secret.strip_prefix(WHSEC_PREFIX) {
        Some(b64) => LENIENT_BASE64.decode(b64).is_ok_and(|key| !key.is_empty()),
        None => true,
    }
}

/// One `webhook-signature` entry: `v1,` + base64 HMAC-SHA256(key, `{id}.{timestamp}.{body}`).
pub fn standard_signature(secret: &str, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut m = mac(&standard_key(secret));
    m.update(format!("{msg_id}.{timestamp_secs}.").as_bytes());
    m.update(body);
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}

/// The `encryptedToken` an endpoint must return in the handshake: lowercase hex
/// HMAC-SHA256(key = secret as UTF-8, message = plainToken).
pub fn handshake_answer(secret: &str, plain_token: &str) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(plain_token.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// Whether `encrypted_token` is the handshake answer for `plain_token` under any of `secrets`
/// (during a rotation overlap both the new and the old secret are accepted). Hex case is ignored
/// by decoding to bytes, and the comparison is constant time (`Mac::verify_slice`) so a timing
/// side channel cannot reveal the expected answer byte by byte.
pub fn verify_handshake(secrets: &[&str], plain_token: &str, encrypted_token: &str) -> bool {
    let Ok(answer) = hex::decode(encrypted_token) else {
        return false;
    };
    secrets.iter().any(|secret| {
        let mut m = mac(secret.as_bytes());
        m.update(plain_token.as_bytes());
        m.verify_slice(&answer).is_ok()
    })
}

/// Receivers accept timestamps this far from their own clock (Standard Webhooks' tolerance).
pub const TOLERANCE_SECS: i64 = 300;

/// A receiver's check of both signature schemes of one delivery (`qss listen`); `header`
/// gives a request header's value ("" when absent). The error says which check failed.
/// Signatures are compared in constant time.
pub fn verify_request<'a>(
    secret: &str,
    header: impl Fn(&str) -> &'a str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), &'static str> {
    let ts: i64 = header("x-zm-request-timestamp")
        .parse()
        .map_err(|_| "missing x-zm-request-timestamp")?;
    if now_secs.abs_diff(ts) > TOLERANCE_SECS as u64 {
        return Err("timestamp outside the 5 minute tolerance");
    }
    if !same(header("x-zm-signature"), &zoom_signature(secret, ts, body)) {
        return Err("x-zm-signature does not match");
    }
    let id = header("webhook-id");
    let wts: i64 = header("webhook-timestamp")
        .parse()
        .map_err(|_| "missing webhook-timestamp")?;
    let expected = standard_signature(secret, id, wts, body);
    if !header("webhook-signature")
        .split(' ')
        .any(|s| same(s, &expected))
    {
        return Err("webhook-signature does not match");
    }
    Ok(())
}

/// Constant-time equality of two signatures (the length is not secret).
fn same(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// A new secret: `whsec_` + standard base64 with padding of 32 random bytes (50 characters).
/// `thread_rng` is a CSPRNG seeded from the operating system, which is what a secret needs.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{WHSEC_PREFIX}{}", general_purpose::STANDARD.encode(key))
}

/// Every header of one attempt (SPEC 7.3), as lowercase names and values.
///
/// `delivery_id` is the same on every attempt of a delivery (receivers deduplicate on it);
/// `timestamp_secs` is the time of this attempt, so retries carry fresh timestamps that pass the
/// receivers' ±5 minute tolerance. `x-zm-signature` always uses `current`; `webhook-signature`
/// carries `v1,<current> v1,<previous>` while a rotated-out secret is within its 24-hour overlap,
/// so receivers still configured with the old secret keep verifying.
pub fn headers(
    version: &str,
    delivery_id: &str,
    timestamp_secs: i64,
    body: &[u8],
    current: &str,
    previous: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut standard = standard_signature(current, delivery_id, timestamp_secs, body);
    if let Some(previous) = previous {
        standard.push(' ');
        standard.push_str(&standard_signature(
            previous,
            delivery_id,
            timestamp_secs,
            body,
        ));
    }
    vec![
        ("content-type", "application/json; charset=utf-8".to_owned()),
        ("user-agent", format!("qss/{version}")),
        ("x-zm-request-timestamp", timestamp_secs.to_string()),
        (
            "x-zm-signature",
            zoom_signature(current, timestamp_secs, body),
        ),
        ("x-zm-request-id", delivery_id.to_owned()),
        ("webhook-id", delivery_id.to_owned()),
        ("webhook-timestamp", timestamp_secs.to_string()),
        ("webhook-signature", standard),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_a_tampered_one_does_not() {
        let secret = "listen-secret-0123456789";
        let body = br#"{"event":"qss.phone_call_qos"}"#;
        let now = 1_700_000_000;
        let headers: std::collections::HashMap<String, String> =
            headers("test", "dlv_1", now, body, secret, None)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let get = |name: &str| headers.get(name).map_or("", String::as_str);
        assert_eq!(verify_request(secret, get, body, now), Ok(()));
        assert!(verify_request(secret, get, br#"{"event":"x"}"#, now).is_err());
        assert!(verify_request("another-secret-0123456", get, body, now).is_err());
        assert_eq!(
            verify_request(secret, get, body, now + 301),
            Err("timestamp outside the 5 minute tolerance")
        );
        // Far-off timestamps do not overflow.
        assert!(verify_request(secret, get, body, i64::MIN).is_err());
    }

    /// The expected values below were computed independently with Python's `hmac` module.
    const SECRET: &str = "qss_test_secret_token";
    const BODY: &[u8] =
        br#"{"event":"qss.meeting_qos_summary","event_ts":1700000000123,"payload":{"mos":4.25}}"#;

    #[test]
    fn standard_signature_matches_the_standard_webhooks_known_answer() {
        let sig = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn zoom_signature_matches_a_known_answer_computed_with_python() {
        assert_eq!(
            zoom_signature(SECRET, 1_700_000_000, BODY),
            "v0=52a76c0876656cb324bf65637f755769a4c348a800b62d252b09e37f9e386e5a"
        );
    }

    #[test]
    fn standard_signature_uses_the_utf8_bytes_of_a_secret_without_the_whsec_prefix() {
        assert_eq!(
            standard_signature(SECRET, "dlv_1", 1_700_000_000, BODY),
            "v1,jMkkTGaAV6pjw2ULaV/OgEAOZFDpLKnu/ARVRzXa76c="
        );
    }

    #[test]
    fn handshake_answer_matches_a_known_answer_computed_with_python() {
        assert_eq!(
            handshake_answer(SECRET, "qgg8vlvZRS6UYooatFL8Aw"),
            "1061f46e752176aa8517e1c973b804ca6ba1103790d74070d32ed0e9c8a8a62e"
        );
    }

    #[test]
    fn handshake_is_verified_regardless_of_hex_case() {
        let answer = handshake_answer(SECRET, "plain");
        assert!(verify_handshake(&[SECRET], "plain", &answer));
        assert!(verify_handshake(
            &[SECRET],
            "plain",
            &answer.to_ascii_uppercase()
        ));
    }

    #[test]
    fn handshake_made_with_either_secret_passes_during_rotation_overlap() {
        let old = "old_secret_token_1234";
        let new = "new_secret_token_5678";
        let with_old = handshake_answer(old, "plain");
        let with_new = handshake_answer(new, "plain");
        assert!(verify_handshake(&[new, old], "plain", &with_old));
        assert!(verify_handshake(&[new, old], "plain", &with_new));
        assert!(!verify_handshake(&[new], "plain", &with_old));
    }

    #[test]
    fn handshake_with_a_wrong_token_or_garbage_fails() {
        let answer = handshake_answer(SECRET, "plain");
        assert!(!verify_handshake(&[SECRET], "other", &answer));
        assert!(!verify_handshake(&[SECRET], "plain", "not hex"));
        assert!(!verify_handshake(&[SECRET], "plain", &answer[..62]));
        assert!(!verify_handshake(&[SECRET], "plain", ""));
        assert!(!verify_handshake(&[], "plain", &answer));
    }

    #[test]
    fn generated_secret_is_whsec_and_padded_base64_of_32_bytes() {
        let secret = generate_secret();
        assert_eq!(secret.len(), 50);
        let b64 = secret.strip_prefix("whsec_").expect("prefix");
        assert!(b64.ends_with('='));
        assert_eq!(STANDARD.decode(b64).expect("base64").len(), 32);
        assert!(secret_is_well_formed(&secret));
        assert_ne!(secret, generate_secret());
    }

    #[test]
    fn a_whsec_secret_that_is_not_base64_is_not_well_formed() {
        assert!(!secret_is_well_formed("whsec_not base64!!"));
        assert!(!secret_is_well_formed("whsec_"));
        assert!(secret_is_well_formed(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        ));
        assert!(secret_is_well_formed("any printable secret"));
    }

    #[test]
    fn headers_carry_both_signatures_over_the_same_body_and_time() {
        let h = headers("1.2.3", "dlv_1", 1_700_000_000, BODY, SECRET, None);
        let get = |name: &str| {
            h.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("missing header {name}"))
        };
        assert_eq!(get("content-type"), "application/json; charset=utf-8");
        assert_eq!(get("user-agent"), "qss/1.2.3");
        assert_eq!(get("x-zm-request-timestamp"), "1700000000");
        assert_eq!(
            get("x-zm-signature"),
            "v0=52a76c0876656cb324bf65637f755769a4c348a800b62d252b09e37f9e386e5a"
        );
        assert_eq!(get("x-zm-request-id"), "dlv_1");
        assert_eq!(get("webhook-id"), "dlv_1");
        assert_eq!(get("webhook-timestamp"), "1700000000");
        assert_eq!(
            get("webhook-signature"),
            "v1,jMkkTGaAV6pjw2ULaV/OgEAOZFDpLKnu/ARVRzXa76c="
        );
        assert_eq!(h.len(), 8);
    }

    #[test]
    fn headers_sign_with_new_then_old_secret_during_rotation_overlap() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let h = headers("1", "dlv_1", 1_700_000_000, BODY, SECRET, Some(old));
        let standard = &h.iter().find(|(n, _)| *n == "webhook-signature").unwrap().1;
        let expected = format!(
            "{} {}",
            standard_signature(SECRET, "dlv_1", 1_700_000_000, BODY),
            standard_signature(old, "dlv_1", 1_700_000_000, BODY)
        );
        assert_eq!(standard, &expected);
        let zoom = &h.iter().find(|(n, _)| *n == "x-zm-signature").unwrap().1;
        assert_eq!(zoom, &zoom_signature(SECRET, 1_700_000_000, BODY));
    }
}
