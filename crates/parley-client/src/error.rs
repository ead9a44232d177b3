//! The one error type of the client library. Every `Display` message is one sentence the CLI
//! prints as-is.

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The passphrase does not open the local store.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The home folder has no account.
    #[error("no account in {0}; create one with `parley account create`")]
    NoAccount(String),
    /// The home folder already has an account.
    #[error("{0} already holds an account; use another --home or delete the account first")]
    AccountExists(String),
    /// Another process has the home folder open.
    #[error("another parley process is using {0}; wait for it to finish")]
    Busy(String),
    /// The local store was written by an unknown version or is damaged.
    #[error("the local store is damaged or from an unknown version: {0}")]
    CorruptStore(String),
    /// The local store (SQLite) failed.
    #[error("the local store failed: {0}")]
    Store(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// Plain HTTP to a non-loopback host.
    #[error("refusing plain HTTP to a non-loopback server; use https:// or --insecure-http")]
    InsecureServer,
    /// The server URL cannot be used.
    #[error("invalid server address {0}: use http(s)://host[:port]")]
    InvalidServerUrl(String),
    /// The TLS setup (extra CA certificate) failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The server could not be reached (connection refused, timeout, unavailable).
    #[error("the server could not be reached: {0}")]
    Unreachable(String),
    /// The server answered with an error.
    #[error("the server refused the request: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The stable error code (`not_found`, `username_taken`, ...).
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// The server's answer could not be understood.
    #[error("the server sent an invalid answer: {0}")]
    Protocol(String),
    /// The recipient has no account on the server.
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// The username is not valid.
    #[error("invalid username: {0}")]
    InvalidUsername(String),
    /// Sending to one's own account (needs a second device).
    #[error("cannot send a message to your own account")]
    SendToSelf,
    /// The contact's account key differs from the pinned one.
    #[error(
        "the identity key of {0} has changed; verify the new safety number before sending again"
    )]
    IdentityChanged(String),
    /// The recipient's keys failed verification.
    #[error("the keys published for {user} are invalid: {reason}")]
    InvalidPeerKeys {
        /// The peer.
        user: String,
        /// Why.
        reason: String,
    },
    /// The message is too long to encrypt.
    #[error("the message is too long: {0} bytes")]
    MessageTooLong(usize),
    /// Unknown contact.
    #[error("no contact named {0}")]
    UnknownContact(String),
    /// A filter rule cannot be used.
    #[error("{0}")]
    InvalidFilter(String),
    /// A report cannot be made as asked.
    #[error("cannot report: {0}")]
    InvalidReport(String),
    /// `accept` / `decline` for someone with no pending request.
    #[error("there is no message request from {0}")]
    NoRequest(String),
    /// Sending to an account this account blocks.
    #[error("you have blocked {0}; unblock them first with `parley unblock {0}`")]
    BlockedContact(String),
    /// Key transparency: the keys of `user` differ from the ones the key directory commits
    /// (docs/KT.md §6). Sending to them is refused.
    #[error(
        "key transparency alarm: the keys of {user} do not match the key directory ({reason}); \
         sending to them is blocked"
    )]
    KtMismatch {
        /// The user.
        user: String,
        /// What differs.
        reason: String,
    },
    /// Key transparency: the server presented a root older than one already verified.
    #[error(
        "key transparency alarm: the server presented epoch {got}, older than epoch {have} \
         already verified; refusing it (rollback)"
    )]
    KtRollback {
        /// The last verified epoch.
        have: u64,
        /// The epoch presented.
        got: u64,
    },
    /// Key transparency: the directory's answer failed verification (bad signature, fork,
    /// not append-only, changed directory key).
    #[error("key transparency alarm: {0}")]
    KtAlarm(String),
    /// A cryptographic operation failed unexpectedly.
    #[error("a cryptographic operation failed: {0}")]
    Crypto(String),
}

impl ClientError {
    /// True for errors that retrying the same request cannot fix (unknown user, changed
    /// identity, invalid keys, a request the server refuses other than for rate limits).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NoSuchUser(_)
            | Self::IdentityChanged(_)
            | Self::InvalidPeerKeys { .. }
            | Self::MessageTooLong(_)
            | Self::InvalidUsername(_)
            | Self::BlockedContact(_)
            | Self::KtMismatch { .. }
            | Self::SendToSelf => true,
            Self::Server { status, .. } => {
                (400..500).contains(status) && *status != 429 && *status != 401
            }
            _ => false,
        }
    }

    /// True when the server could not be reached (the CLI exits with code 3 for queued sends).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }

    /// True for key-transparency alarms.
    pub fn is_kt_alarm(&self) -> bool {
        matches!(self, Self::KtMismatch { .. } | Self::KtRollback { .. } | Self::KtAlarm(_))
    }
}

impl From<sqlx::Error> for ClientError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.to_string())
    }
}
