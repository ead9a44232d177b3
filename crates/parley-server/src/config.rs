//! Server configuration: defaults for a zero-configuration first run, overridable from a TOML
//! file (`--config`) and then from command-line flags. Every limit is documented in
//! docs/OPERATIONS.md with its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";
/// Default data folder.
pub const DEFAULT_DATA_DIR: &str = "./parley-data";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data folder (SQLite database, admin token).
    pub data_dir: PathBuf,
    /// A `postgres://` URL: store in PostgreSQL instead of the embedded SQLite database.
    pub database: Option<String>,
    /// Listen address. Anything but loopback requires `tls_cert` and `tls_key`.
    pub listen: SocketAddr,
    /// PEM certificate chain for TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// NATS servers for cross-node wake-ups (`nats://HOST:PORT[,...]`); needs `database` and a
    /// master key (docs/OPERATIONS.md "Several nodes").
    pub nats: Option<String>,
    /// File holding the node master key (32 bytes, base64) that seals the shared key material
    /// in the database. Without it (and without `PARLEY_MASTER_KEY`) the keys are files in the
    /// data folder.
    pub master_key_file: Option<PathBuf>,
    /// Limits.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7470)),
            tls_cert: None,
            tls_key: None,
            nats: None,
            master_key_file: None,
            limits: Limits::default(),
        }
    }
}

/// Every size, count, rate and time the server enforces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest HTTP request body, bytes.
    pub max_body_bytes: usize,
    /// Largest abuse report body (`POST /v1/reports`), bytes: a report with the most context
    /// (the reported message and 50 earlier ones, each up to the longest text) is larger than
    /// an ordinary request.
    pub max_report_bytes: usize,
    /// Largest ciphertext in one envelope, bytes.
    pub max_envelope_bytes: usize,
    /// Most envelopes (recipient devices) in one send.
    pub max_envelopes_per_send: usize,
    /// Most one-time prekeys of each kind in one upload.
    pub max_prekeys_per_upload: usize,
    /// Most one-time prekeys of each kind a device may hold.
    pub max_one_time_prekeys: u64,
    /// Below this many one-time prekeys (either kind) the device is told to replenish.
    pub prekey_low_water: u64,
    /// A signed or last-resort prekey older than this is reported as due for rotation.
    pub prekey_rotation_secs: u64,
    /// Most envelopes waiting in one device's queue.
    pub max_queue_len: u64,
    /// Envelopes older than this are deleted unread.
    pub queue_ttl_secs: u64,
    /// Most envelopes per `GET /v1/messages` page.
    pub fetch_page: u32,
    /// Most ids in one ack.
    pub max_ack_ids: usize,
    /// Largest WebSocket frame or message from a client, bytes.
    pub ws_max_message_bytes: usize,
    /// Most unacknowledged envelopes pushed on one connection.
    pub ws_inflight_window: usize,
    /// Seconds between queue polls on a connection (a safety net for missed wake-ups).
    pub ws_poll_secs: u64,
    /// Most `send` frames of one connection being processed at once; the server reads no
    /// further frames from the connection until one is answered.
    pub ws_sends_in_flight: usize,
    /// Requests per second per account (sustained).
    pub account_rps: u32,
    /// Burst of requests per account.
    pub account_burst: u32,
    /// Requests per second per IP address (sustained).
    pub ip_rps: u32,
    /// Burst of requests per IP address.
    pub ip_burst: u32,
    /// Registrations per hour per IP address.
    pub registrations_per_hour: u32,
    /// Bundle fetches per hour per requesting device (protects one-time prekeys from draining).
    pub bundle_fetches_per_hour: u32,
    /// Sends per second per account (sustained; all of the account's devices together).
    pub account_sends_per_sec: u32,
    /// Burst of sends per account.
    pub account_send_burst: u32,
    /// Sends per second per IP address (sustained).
    pub ip_sends_per_sec: u32,
    /// Burst of sends per IP address.
    pub ip_send_burst: u32,
    /// New conversations (first message to an account that never wrote to this one) per hour
    /// per account.
    pub new_conversations_per_hour: u32,
    /// The same limit for accounts younger than `new_account_secs`.
    pub new_account_conversations_per_hour: u32,
    /// How long an account counts as new, seconds.
    pub new_account_secs: u64,
    /// How long a retired franking key still verifies reports, seconds after its retirement
    /// (docs/OPERATIONS.md, "Franking keys"). Keep it at least `queue_ttl_secs` plus the time
    /// users take to report.
    pub franking_grace_secs: u64,
    /// Abuse reports per hour per account.
    pub reports_per_hour: u32,
    /// Seconds between key-transparency epochs: every change queued since the last epoch is
    /// published together (docs/KT.md). `parley server --kt-epoch-interval`.
    pub kt_epoch_interval_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_report_bytes: 8 * 1024 * 1024,
            max_envelope_bytes: 72 * 1024,
            max_envelopes_per_send: 32,
            max_prekeys_per_upload: 100,
            max_one_time_prekeys: 200,
            prekey_low_water: 20,
            prekey_rotation_secs: 7 * 24 * 3600,
            max_queue_len: 10_000,
            queue_ttl_secs: 30 * 24 * 3600,
            fetch_page: 100,
            max_ack_ids: 1000,
            ws_max_message_bytes: 64 * 1024,
            ws_inflight_window: 128,
            ws_poll_secs: 5,
            ws_sends_in_flight: 32,
            account_rps: 50,
            account_burst: 200,
            ip_rps: 200,
            ip_burst: 400,
            registrations_per_hour: 30,
            bundle_fetches_per_hour: 600,
            account_sends_per_sec: 20,
            account_send_burst: 200,
            ip_sends_per_sec: 100,
            ip_send_burst: 1000,
            new_conversations_per_hour: 30,
            new_account_conversations_per_hour: 5,
            new_account_secs: 24 * 3600,
            franking_grace_secs: 30 * 24 * 3600,
            reports_per_hour: 20,
            kt_epoch_interval_secs: 10,
        }
    }
}

impl Limits {
    /// The limits of a load test (`parley bench`'s embedded server, or an operator's test
    /// server through `--config`): every rate limit lifted so that the measured figure is the
    /// server's, not a limiter's. Sizes, queues and windows stay at their defaults. Never the
    /// default of a real server.
    pub fn load_test() -> Self {
        let lots = 1_000_000_000;
        Self {
            account_rps: lots,
            account_burst: lots,
            ip_rps: lots,
            ip_burst: lots,
            registrations_per_hour: lots,
            bundle_fetches_per_hour: lots,
            account_sends_per_sec: lots,
            account_send_burst: lots,
            ip_sends_per_sec: lots,
            ip_send_burst: lots,
            new_conversations_per_hour: lots,
            new_account_conversations_per_hour: lots,
            ..Self::default()
        }
    }
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file could not be read or parsed.
    #[error("cannot read the configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A non-loopback address without TLS.
    #[error(
        "refusing to listen on {0} without TLS: plain HTTP is allowed only on loopback; pass --tls-cert and --tls-key"
    )]
    NeedsTls(SocketAddr),
    /// Only one of the TLS files was given.
    #[error("TLS needs both --tls-cert and --tls-key")]
    HalfTls,
    /// The database URL is not a PostgreSQL URL.
    #[error(
        "unsupported database URL: use postgres://USER@HOST/DB (SQLite needs no URL: it lives in --data)"
    )]
    DatabaseUrl,
    /// `nats` without a shared database.
    #[error(
        "--nats needs --database postgres://...: the nodes of a cluster share one PostgreSQL database"
    )]
    NatsNeedsDatabase,
    /// A limit is zero where it must not be.
    #[error("invalid limit: {0} must be greater than zero")]
    ZeroLimit(&'static str),
}

impl Config {
    /// Reads a TOML configuration file (missing keys take their defaults).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { path: path.to_path_buf(), reason: e.to_string() })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::File { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Checks the rules that make a configuration unsafe or unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => return Err(ConfigError::HalfTls),
            (None, None) if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::NeedsTls(self.listen));
            }
            _ => {}
        }
        if self
            .database
            .as_deref()
            .is_some_and(|u| !(u.starts_with("postgres://") || u.starts_with("postgresql://")))
        {
            return Err(ConfigError::DatabaseUrl);
        }
        if self.nats.is_some() && self.database.is_none() {
            return Err(ConfigError::NatsNeedsDatabase);
        }
        let l = &self.limits;
        for (name, v) in [
            ("max_body_bytes", l.max_body_bytes as u64),
            ("max_report_bytes", l.max_report_bytes as u64),
            ("max_envelope_bytes", l.max_envelope_bytes as u64),
            ("max_envelopes_per_send", l.max_envelopes_per_send as u64),
            ("max_queue_len", l.max_queue_len),
            ("queue_ttl_secs", l.queue_ttl_secs),
            ("max_prekeys_per_upload", l.max_prekeys_per_upload as u64),
            ("max_one_time_prekeys", l.max_one_time_prekeys),
            ("prekey_rotation_secs", l.prekey_rotation_secs),
            ("fetch_page", u64::from(l.fetch_page)),
            ("max_ack_ids", l.max_ack_ids as u64),
            ("ws_max_message_bytes", l.ws_max_message_bytes as u64),
            ("ws_inflight_window", l.ws_inflight_window as u64),
            ("ws_poll_secs", l.ws_poll_secs),
            ("ws_sends_in_flight", l.ws_sends_in_flight as u64),
            ("account_rps", u64::from(l.account_rps)),
            ("account_burst", u64::from(l.account_burst)),
            ("ip_rps", u64::from(l.ip_rps)),
            ("ip_burst", u64::from(l.ip_burst)),
            ("registrations_per_hour", u64::from(l.registrations_per_hour)),
            ("bundle_fetches_per_hour", u64::from(l.bundle_fetches_per_hour)),
            ("account_sends_per_sec", u64::from(l.account_sends_per_sec)),
            ("account_send_burst", u64::from(l.account_send_burst)),
            ("ip_sends_per_sec", u64::from(l.ip_sends_per_sec)),
            ("ip_send_burst", u64::from(l.ip_send_burst)),
            ("new_conversations_per_hour", u64::from(l.new_conversations_per_hour)),
            ("new_account_conversations_per_hour", u64::from(l.new_account_conversations_per_hour)),
            ("franking_grace_secs", l.franking_grace_secs),
            ("reports_per_hour", u64::from(l.reports_per_hour)),
            ("kt_epoch_interval_secs", l.kt_epoch_interval_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        Ok(())
    }

    /// True when TLS is configured.
    pub fn uses_tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_rules() {
        let c = Config::default();
        c.validate().unwrap();
        let mut open = c.clone();
        open.listen = "0.0.0.0:7470".parse().unwrap();
        assert!(matches!(open.validate(), Err(ConfigError::NeedsTls(_))));
        open.tls_cert = Some("c.pem".into());
        assert!(matches!(open.validate(), Err(ConfigError::HalfTls)));
        open.tls_key = Some("k.pem".into());
        open.validate().unwrap();
        let parsed: Config =
            toml::from_str("listen = \"127.0.0.1:9000\"\n[limits]\nmax_queue_len = 5\n").unwrap();
        assert_eq!(parsed.limits.max_queue_len, 5);
        assert_eq!(parsed.limits.fetch_page, Limits::default().fetch_page);
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
        let pg = Config { database: Some("postgres://u@h/db".into()), ..Config::default() };
        pg.validate().unwrap();
        let lonely = Config { nats: Some("nats://127.0.0.1:4222".into()), ..Config::default() };
        assert!(matches!(lonely.validate(), Err(ConfigError::NatsNeedsDatabase)));
        let cluster = Config { nats: Some("nats://127.0.0.1:4222".into()), ..pg.clone() };
        cluster.validate().unwrap();
        let bad = Config { database: Some("mysql://u@h/db".into()), ..Config::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::DatabaseUrl)));
        let mut zero = Config::default();
        zero.limits.fetch_page = 0;
        assert!(matches!(zero.validate(), Err(ConfigError::ZeroLimit("fetch_page"))));
        let mut zero = Config::default();
        zero.limits.reports_per_hour = 0;
        assert!(matches!(zero.validate(), Err(ConfigError::ZeroLimit("reports_per_hour"))));
    }
}
