//! Layered configuration (SPEC 9): built-in defaults (`config/default.toml`, embedded), then a
//! TOML file, then the `QSS_*` environment variables of the SPEC's table, then flags.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub database: String,
    pub public_url: Option<String>,
    pub admin_token: Option<String>,
    pub auth: AuthConfig,
    pub ingest: IngestConfig,
    pub rate_limit: RateLimitConfig,
    pub webhook: WebhookConfig,
    pub postgres: PostgresConfig,
}

/// Settings of the PostgreSQL backend (ignored on SQLite).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connections this node opens at most.
    pub pool_size: usize,
    /// How long an aggregation partition stays with a node that stopped renewing it: after a
    /// node dies, its windows are emitted by the others this much later.
    pub lease_seconds: u64,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub token_ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_body_bytes: usize,
    pub max_samples: usize,
    pub max_sample_age_seconds: i64,
    /// Ingest requests admitted at once (read, queued or committing); beyond, 503.
    pub max_in_flight: usize,
    /// How long a request waits for its commit before answering 503.
    pub commit_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub light: u32,
    pub heavy: u32,
    pub ingest: u32,
    pub oauth: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub timeout_ms: u64,
    #[serde(deserialize_with = "list_or_comma_string")]
    pub retry_schedule_seconds: Vec<u64>,
    pub revalidate_hours: u64,
    pub allow_private_networks: bool,
    pub max_in_flight_per_endpoint: u32,
    pub lease_seconds: u64,
    pub delivery_log_days: u32,
}

fn list_or_comma_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<u64>),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::List(v) => Ok(v),
        Either::Text(s) => s
            .split(',')
            .map(|p| p.trim().parse::<u64>().map_err(serde::de::Error::custom))
            .collect(),
    }
}

/// The environment variables of SPEC 9 and the keys they set.
const ENV: &[(&str, &str)] = &[
    ("QSS_LISTEN", "listen"),
    ("QSS_DATABASE", "database"),
    ("QSS_PUBLIC_URL", "public_url"),
    ("QSS_ADMIN_TOKEN", "admin_token"),
    ("QSS_AUTH_TOKEN_TTL_SECONDS", "auth.token_ttl_seconds"),
    ("QSS_INGEST_MAX_BODY_BYTES", "ingest.max_body_bytes"),
    ("QSS_INGEST_MAX_SAMPLES", "ingest.max_samples"),
    (
        "QSS_INGEST_MAX_SAMPLE_AGE_SECONDS",
        "ingest.max_sample_age_seconds",
    ),
    ("QSS_INGEST_MAX_IN_FLIGHT", "ingest.max_in_flight"),
    ("QSS_INGEST_COMMIT_TIMEOUT_MS", "ingest.commit_timeout_ms"),
    ("QSS_RATE_LIMIT_LIGHT", "rate_limit.light"),
    ("QSS_RATE_LIMIT_HEAVY", "rate_limit.heavy"),
    ("QSS_RATE_LIMIT_INGEST", "rate_limit.ingest"),
    ("QSS_RATE_LIMIT_OAUTH", "rate_limit.oauth"),
    ("QSS_WEBHOOK_TIMEOUT_MS", "webhook.timeout_ms"),
    (
        "QSS_WEBHOOK_RETRY_SCHEDULE_SECONDS",
        "webhook.retry_schedule_seconds",
    ),
    ("QSS_WEBHOOK_REVALIDATE_HOURS", "webhook.revalidate_hours"),
    (
        "QSS_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        "webhook.allow_private_networks",
    ),
    (
        "QSS_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
        "webhook.max_in_flight_per_endpoint",
    ),
    ("QSS_WEBHOOK_LEASE_SECONDS", "webhook.lease_seconds"),
    ("QSS_WEBHOOK_DELIVERY_LOG_DAYS", "webhook.delivery_log_days"),
    ("QSS_POSTGRES_POOL_SIZE", "postgres.pool_size"),
    ("QSS_POSTGRES_LEASE_SECONDS", "postgres.lease_seconds"),
];

/// Overrides given on the command line, as `key = value` (dotted keys).
pub type Overrides = Vec<(String, String)>;

impl Config {
    /// Loads defaults, then `file`, then the environment (`env` lists `(name, value)`), then
    /// `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table = DEFAULTS.parse().context("built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let overlay: toml::Table = text
                .parse()
                .with_context(|| format!("parsing config file {}", path.display()))?;
            merge(&mut table, overlay);
        }
        for (name, value) in env {
            if let Some((_, key)) = ENV.iter().find(|(n, _)| *n == name) {
                set(&mut table, key, &value)
                    .with_context(|| format!("environment variable {name}"))?;
            }
        }
        for (key, value) in flags {
            set(&mut table, key, value)?;
        }
        let config: Config = table.try_into_config()?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.auth.token_ttl_seconds == 0 {
            bail!("auth.token_ttl_seconds must be positive");
        }
        if self.ingest.max_samples == 0 || self.ingest.max_body_bytes == 0 {
            bail!("ingest limits must be positive");
        }
        // An attempt starts at most half a lease after its claim and lasts at most the
        // timeout, so a lease longer than twice the timeout is never outlived by an attempt:
        // no delivery is ever in flight twice.
        if self.postgres.pool_size < 2 || self.postgres.lease_seconds == 0 {
            bail!("postgres.pool_size must be at least 2 and postgres.lease_seconds positive");
        }
        if self.webhook.lease_seconds * 1000 <= 2 * self.webhook.timeout_ms {
            bail!(
                "webhook.lease_seconds ({}) must be more than twice webhook.timeout_ms ({} ms)",
                self.webhook.lease_seconds,
                self.webhook.timeout_ms
            );
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// The backend `database` names.
    pub fn backend(&self) -> anyhow::Result<Backend> {
        match self.database.strip_prefix("sqlite://") {
            Some(p) if !p.is_empty() => Ok(Backend::Sqlite(p.into())),
            _ if self.database.starts_with("postgres://")
                || self.database.starts_with("postgresql://") =>
            {
                Ok(Backend::Postgres(self.database.clone()))
            }
            _ => bail!(
                "database must be sqlite://<path> or postgres://..., got {:?}",
                self.database
            ),
        }
    }
}

trait IntoConfig {
    fn try_into_config(self) -> anyhow::Result<Config>;
}

impl IntoConfig for toml::Table {
    fn try_into_config(self) -> anyhow::Result<Config> {
        toml::Value::Table(self)
            .try_into()
            .context("invalid configuration")
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Sets a dotted key from a string, typed like the default it replaces.
fn set(table: &mut toml::Table, key: &str, raw: &str) -> anyhow::Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("{key}: {p} is not a table"))?;
    }
    let value = match t.get(last) {
        Some(toml::Value::Integer(_)) => toml::Value::Integer(
            raw.trim()
                .parse()
                .with_context(|| format!("{key} must be an integer"))?,
        ),
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => bail!("{key} must be true or false"),
        }),
        Some(toml::Value::Array(_)) => toml::Value::String(raw.to_string()),
        _ => toml::Value::String(raw.to_string()),
    };
    t.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::load(None, Vec::new(), &Vec::new()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.database, "sqlite://qss-data/qss.db");
        assert_eq!(c.auth.token_ttl_seconds, 3600);
        assert_eq!(c.webhook.retry_schedule_seconds, vec![300, 1200, 3600]);
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let dir = std::env::temp_dir().join(format!("qss-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("qss.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[auth]\ntoken_ttl_seconds = 5\n",
        )
        .unwrap();
        let env = vec![
            ("QSS_LISTEN".to_string(), "127.0.0.1:2".to_string()),
            (
                "QSS_WEBHOOK_RETRY_SCHEDULE_SECONDS".to_string(),
                "1,2".to_string(),
            ),
            ("QSS_UNRELATED".to_string(), "x".to_string()),
        ];
        let flags = vec![("database".to_string(), "sqlite:///tmp/x.db".to_string())];
        let c = Config::load(Some(&file), env, &flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.auth.token_ttl_seconds, 5);
        assert_eq!(c.webhook.retry_schedule_seconds, vec![1, 2]);
        assert_eq!(c.database, "sqlite:///tmp/x.db");
    }

    #[test]
    fn a_lease_not_longer_than_twice_the_timeout_is_refused() {
        let env = vec![("QSS_WEBHOOK_LEASE_SECONDS".to_string(), "6".to_string())];
        let err = Config::load(None, env, &Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("more than twice"), "{err:#}");
    }

    #[test]
    fn a_bad_value_is_a_clear_error() {
        let env = vec![("QSS_AUTH_TOKEN_TTL_SECONDS".to_string(), "soon".to_string())];
        let err = Config::load(None, env, &Vec::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("QSS_AUTH_TOKEN_TTL_SECONDS"),
            "{err:#}"
        );
    }
}
