//! Reading request bodies after authentication (the SPEC forbids reading before): content
//! type (415), size with gzip decoding (413), then JSON (400 with `field: ""`).

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::ApiError;

/// The media type of the request, lowercased, without parameters (`None` when absent).
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Reads at most `limit` bytes of body, decoding `Content-Encoding: gzip` (the limit applies
/// to the decoded bytes).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(e) if e == "identity" || e.is_empty() => false,
        Some(e) => {
            return Err(ApiError::UnsupportedMedia(format!(
                "Unsupported Content-Encoding: {e}."
            )));
        }
    };
    let too_large = || ApiError::TooLarge(format!("Request body is larger than {limit} bytes."));
    // A gzip body is at most as large as what it decodes to, give or take its header.
    let raw = http_body_util::Limited::new(body, limit + 1024)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::invalid("", "The request body could not be read.")
            }
        })?
        .to_bytes();
    if !gzip {
        return if raw.len() > limit {
            Err(too_large())
        } else {
            Ok(raw)
        };
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::invalid("", "The request body is not valid gzip."))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(out))
}

/// Reads a JSON object body of an ordinary endpoint. `optional`: an empty body is `{}` whatever
/// its content type.
pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    optional: bool,
) -> Result<serde_json::Value, ApiError> {
    let media = media_type(headers);
    let bytes = read_limited(headers, body, limit).await?;
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    match media.as_deref() {
        Some("application/json") => {}
        Some(other) => {
            return Err(ApiError::UnsupportedMedia(format!(
                "Unsupported Content-Type: {other}; use application/json."
            )));
        }
        None => {
            return Err(ApiError::UnsupportedMedia(
                "Missing Content-Type; use application/json.".to_string(),
            ));
        }
    }
    let value = parse_json(&bytes)?;
    // Every JSON body of this API is an object; `[]` or `3` is refused, not read as empty.
    if !value.is_object() {
        return Err(ApiError::invalid(
            "",
            "The request body must be a JSON object.",
        ));
    }
    Ok(value)
}

pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::invalid("", "The request body is not valid UTF-8."))?;
    if qss_domain::ingest::nesting_exceeds(text, 64) {
        return Err(ApiError::invalid(
            "",
            "The request body is nested deeper than 64 levels.",
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| ApiError::invalid("", format!("The request body is not valid JSON: {e}.")))
}
