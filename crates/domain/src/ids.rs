//! Identifiers and secrets: account ids, plans, generated ids and random secret strings.

use rand::Rng;
use serde::{Deserialize, Serialize};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// An account id: `^[A-Za-z0-9_-]{16,32}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (16..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| AccountId(s.to_string()))
    }

    /// A fresh id: 22 alphanumeric characters (about 131 random bits), so never reused.
    pub fn generate() -> Self {
        AccountId(random_string(ALNUM, 22))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Pro,
    Business,
    Enterprise,
}

impl Plan {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pro" => Some(Plan::Pro),
            "business" => Some(Plan::Business),
            "enterprise" => Some(Plan::Enterprise),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Pro => "pro",
            Plan::Business => "business",
            Plan::Enterprise => "enterprise",
        }
    }

    /// QSS is enabled only on business and enterprise plans with the add-on (SPEC 1).
    pub fn qss_enabled(self, addon: bool) -> bool {
        addon && matches!(self, Plan::Business | Plan::Enterprise)
    }
}

/// Random characters from `alphabet`, from the operating system's generator.
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// 32 random bytes (256 bits), base64url without padding: 43 characters.
pub fn random_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64url(&bytes)
}

/// A client id: 22 alphanumeric characters.
pub fn generate_client_id() -> String {
    random_string(ALNUM, 22)
}

/// An ingest key id: 12 characters `[a-z0-9]`.
pub fn generate_key_id() -> String {
    random_string(LOWER_ALNUM, 12)
}

/// The parts of an ingest key `qssik_<key_id>_<secret>`, if it has that shape.
pub fn split_ingest_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("qssik_")?;
    let (id, secret) = rest.split_at_checked(12)?;
    let secret = secret.strip_prefix('_')?;
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (id_ok && secret.len() == 43).then_some((id, secret))
}

fn base64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_account_ids_parse() {
        let id = AccountId::generate();
        assert_eq!(id.as_str().len(), 22);
        assert!(AccountId::parse(id.as_str()).is_some());
    }

    #[test]
    fn account_id_shape_is_enforced() {
        assert!(AccountId::parse("short").is_none());
        assert!(AccountId::parse("abcdefghijklmnop").is_some());
        assert!(AccountId::parse("abcdefghijklmno!").is_none());
        assert!(AccountId::parse(&"a".repeat(33)).is_none());
    }

    #[test]
    fn secrets_are_43_base64url_chars() {
        let s = random_secret();
        assert_eq!(s.len(), 43);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
    }

    #[test]
    fn ingest_keys_split_into_id_and_secret() {
        let secret = random_secret();
        let key = format!("qssik_abcdef123456_{secret}");
        assert_eq!(
            split_ingest_key(&key),
            Some(("abcdef123456", secret.as_str()))
        );
        assert_eq!(split_ingest_key("qssik_ABCDEF123456_x"), None);
        assert_eq!(split_ingest_key("bearer"), None);
    }
}
