//! # parley-api
//!
//! The client↔server API of Parley, version 1: REST request and response bodies (JSON) and
//! WebSocket frames. No crypto and no I/O: ciphertexts, keys and signed objects are opaque
//! bytes here (base64 in JSON); `parley-proto` gives them meaning.
//!
//! Paths (all under `/v1`):
//!
//! | method | path | body → response |
//! |---|---|---|
//! | POST | `/v1/accounts` | [`RegisterRequest`] → [`RegisterResponse`] |
//! | GET | `/v1/accounts/self` | → [`AccountInfo`] |
//! | DELETE | `/v1/accounts/self` | → 204 |
//! | PUT | `/v1/devices/self/prekeys` | [`PrekeyUpload`] → [`PrekeyStatus`] |
//! | GET | `/v1/devices/self/prekeys` | → [`PrekeyStatus`] |
//! | GET | `/v1/accounts/{username}/bundles` | → [`BundlesResponse`] |
//! | POST | `/v1/messages` | [`SendRequest`] → [`SendResponse`] (409 [`StaleDevices`]) |
//! | GET | `/v1/messages` | → [`FetchResponse`] |
//! | POST | `/v1/messages/ack` | [`AckRequest`] → [`AckResponse`] |
//! | GET | `/v1/ws` | WebSocket: [`ServerFrame`] / [`ClientFrame`] |
//! | GET | `/v1/kt/root` | → [`KtRoot`] (no authentication) |
//! | GET | `/v1/kt/lookup/{username}` | → [`KtProofResponse`] (404 `not_published` before its first epoch) |
//! | GET | `/v1/kt/history` | → [`KtProofResponse`] for the caller's own account |
//! | GET | `/v1/kt/audit?start=&end=` | → [`KtAuditResponse`] (no authentication) |
//! | POST | `/v1/admin/kt/publish` | → [`KtPublishResponse`] (admin token) |
//!
//! Authenticated requests carry `Authorization: Bearer <token>` with the device token from
//! [`RegisterResponse`]. Errors are [`ErrorBody`] with a 4xx/5xx status.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// The API version in every path.
pub const API_VERSION: &str = "v1";
/// Shortest username.
pub const USERNAME_MIN_LEN: usize = 3;
/// Longest username.
pub const USERNAME_MAX_LEN: usize = 32;
/// Longest client message id.
pub const MESSAGE_ID_MAX_LEN: usize = 64;

/// Bytes carried as standard base64 (with padding) in JSON. `Debug` shows only the length,
/// so ciphertexts and keys never reach logs through it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The raw bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes)
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

/// Why a username is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameError {
    /// Shorter than [`USERNAME_MIN_LEN`] or longer than [`USERNAME_MAX_LEN`].
    Length,
    /// Not of the form `[a-z][a-z0-9_.-]*`.
    Charset,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length => write!(f, "a username has {USERNAME_MIN_LEN} to {USERNAME_MAX_LEN} characters"),
            Self::Charset => f.write_str(
                "a username starts with a lowercase letter and has only lowercase letters, digits, '_', '.' and '-'",
            ),
        }
    }
}

/// Checks a username: 3–32 characters, a lowercase ASCII letter first, then lowercase letters,
/// digits, `_`, `.` or `-`. (Lowercase only, so no two accounts differ by case alone.)
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    if !(USERNAME_MIN_LEN..=USERNAME_MAX_LEN).contains(&name.len()) {
        return Err(UsernameError::Length);
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok { Ok(()) } else { Err(UsernameError::Charset) }
}

/// Checks a client message id: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn validate_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MESSAGE_ID_MAX_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A device's keys as uploaded at registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceUpload {
    /// Encoded device certificate (signed by the account key).
    #[schema(value_type = String, format = Byte)]
    pub certificate: Bytes,
    /// Encoded signed X25519 prekey.
    #[schema(value_type = String, format = Byte)]
    pub signed_prekey: Bytes,
    /// Encoded signed last-resort ML-KEM-1024 prekey.
    #[schema(value_type = String, format = Byte)]
    pub last_resort_kem: Bytes,
    /// Encoded one-time X25519 prekeys.
    #[schema(value_type = Vec<String>)]
    #[serde(default)]
    pub one_time_prekeys: Vec<Bytes>,
    /// Encoded signed one-time ML-KEM-1024 prekeys.
    #[schema(value_type = Vec<String>)]
    #[serde(default)]
    pub one_time_kem_prekeys: Vec<Bytes>,
}

/// `POST /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The username (see [`validate_username`]).
    pub username: String,
    /// The account identity key (Ed25519, 32 bytes).
    #[schema(value_type = String, format = Byte)]
    pub account_key: Bytes,
    /// The encoded device list (version 1, naming this device), signed by the account key.
    #[schema(value_type = String, format = Byte)]
    pub device_list: Bytes,
    /// The first device.
    pub device: DeviceUpload,
    /// The age class declared at registration (default `adult`); only an admin can change it
    /// afterwards.
    #[serde(default)]
    pub age_class: AgeClass,
}

/// An account's age class: the contact policy for minors depends on it (docs/SAFETY.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgeClass {
    /// An adult.
    #[default]
    Adult,
    /// A minor: adults can write only after the minor wrote to them first.
    Minor,
}

impl AgeClass {
    /// True for [`AgeClass::Minor`].
    pub fn is_minor(self) -> bool {
        self == Self::Minor
    }

    /// The class for a flag.
    pub fn from_minor(minor: bool) -> Self {
        if minor { Self::Minor } else { Self::Adult }
    }

    /// `adult` or `minor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adult => "adult",
            Self::Minor => "minor",
        }
    }
}

/// `PUT /v1/admin/accounts/{username}/age`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAgeRequest {
    /// The new age class.
    pub age_class: AgeClass,
}

/// `PUT /v1/admin/accounts/{username}/suspension`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSuspensionRequest {
    /// True to suspend (the account can no longer send), false to lift the suspension.
    pub suspended: bool,
}

/// `GET /v1/blocks`: the accounts this account blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlockList {
    /// Usernames, sorted.
    pub blocked: Vec<String>,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// The registered username.
    pub username: String,
    /// The device id (from the certificate).
    pub device_id: u32,
    /// The device's bearer token. Shown once; the server keeps only its hash.
    pub token: String,
}

/// `GET /v1/accounts/self`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccountInfo {
    /// The username.
    pub username: String,
    /// The authenticated device.
    pub device_id: u32,
    /// All device ids of the account.
    pub devices: Vec<u32>,
    /// Envelopes waiting in this device's queue.
    pub queued: u64,
    /// The account's age class.
    #[serde(default)]
    pub age_class: AgeClass,
}

/// `PUT /v1/devices/self/prekeys`: replenish or rotate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrekeyUpload {
    /// A new signed X25519 prekey (rotation).
    #[schema(value_type = Option<String>, format = Byte)]
    #[serde(default)]
    pub signed_prekey: Option<Bytes>,
    /// A new last-resort ML-KEM prekey (rotation).
    #[schema(value_type = Option<String>, format = Byte)]
    #[serde(default)]
    pub last_resort_kem: Option<Bytes>,
    /// More one-time X25519 prekeys.
    #[schema(value_type = Vec<String>)]
    #[serde(default)]
    pub one_time_prekeys: Vec<Bytes>,
    /// More signed one-time ML-KEM prekeys.
    #[schema(value_type = Vec<String>)]
    #[serde(default)]
    pub one_time_kem_prekeys: Vec<Bytes>,
}

/// The device's prekey stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrekeyStatus {
    /// One-time X25519 prekeys left.
    pub one_time_prekeys: u64,
    /// One-time ML-KEM prekeys left.
    pub one_time_kem_prekeys: u64,
    /// True when either stock is below the server's low-water mark: upload more.
    pub low: bool,
    /// Seconds since the signed prekey was uploaded.
    pub signed_prekey_age_secs: u64,
    /// True when the signed prekey or the last-resort KEM prekey is due for rotation.
    pub rotate: bool,
}

/// One device's prekey bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceBundle {
    /// The device id.
    pub device_id: u32,
    /// The encoded bundle (`PrekeyBundleIn`): certificate, signed prekey, one KEM prekey
    /// (one-time when available, else last-resort), and a one-time X25519 prekey when available.
    #[schema(value_type = String, format = Byte)]
    pub bundle: Bytes,
}

/// `GET /v1/accounts/{username}/bundles`: one bundle per device (consumes one-time prekeys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BundlesResponse {
    /// The username.
    pub username: String,
    /// The account identity key.
    #[schema(value_type = String, format = Byte)]
    pub account_key: Bytes,
    /// The encoded, account-signed device list.
    #[schema(value_type = String, format = Byte)]
    pub device_list: Bytes,
    /// A bundle for every listed device.
    pub devices: Vec<DeviceBundle>,
}

/// One ciphertext for one recipient device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutgoingEnvelope {
    /// The recipient device.
    pub device_id: u32,
    /// The encrypted message for that device.
    #[schema(value_type = String, format = Byte)]
    pub ciphertext: Bytes,
}

/// `POST /v1/messages`: one message, one ciphertext per recipient device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The recipient's username.
    pub recipient: String,
    /// The client's id for this message (see [`validate_message_id`]); a retry with the same id
    /// is acknowledged again and never stored twice.
    pub message_id: String,
    /// One envelope per recipient device.
    pub envelopes: Vec<OutgoingEnvelope>,
    /// The franking commitment TF (32 bytes) of the message, the same for every device copy
    /// (PROTOCOL.md §12); the server binds it to the sender, the recipient and the time.
    #[schema(value_type = String, format = Byte)]
    pub franking_tag: Bytes,
}

/// The acknowledgement of a send: the message is durably stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    /// The client's message id.
    pub message_id: String,
    /// The server's time of acceptance, in milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// True when this id had already been accepted (a retry); nothing new was stored.
    pub duplicate: bool,
}

/// The 409 answer to a send whose device set is stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StaleDevices {
    /// Always `stale_devices`.
    pub error: String,
    /// A human-readable sentence.
    pub message: String,
    /// Devices the recipient has that the send did not cover: fetch their bundles and add them.
    pub missing_devices: Vec<u32>,
    /// Devices the send named that the recipient does not have: drop them.
    pub extra_devices: Vec<u32>,
}

/// A stored message for this device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    /// The queue position (ack with it).
    pub id: u64,
    /// The sender's message id (the same for every device copy).
    pub message_id: String,
    /// The sender's username.
    pub sender: String,
    /// The sender's device.
    pub sender_device: u32,
    /// When the server accepted it, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// The ciphertext.
    #[schema(value_type = String, format = Byte)]
    pub ciphertext: Bytes,
    /// The sender's franking commitment TF (32 bytes).
    #[schema(value_type = String, format = Byte)]
    pub franking_tag: Bytes,
    /// The server's franking tag RF (32 bytes) over TF, sender account and device, recipient
    /// account and `server_time_ms`, under the franking key `franking_key_id`.
    #[schema(value_type = String, format = Byte)]
    pub server_tag: Bytes,
    /// The id of the server franking key that made `server_tag`.
    pub franking_key_id: u32,
}

/// `POST /v1/reports`: a franked abuse report (PROTOCOL.md §12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The encoded `parley_proto::Report` (its `reporter` must be the caller's username).
    #[schema(value_type = String, format = Byte)]
    pub report: Bytes,
    /// The reporter's reason, at most [`MAX_REPORT_REASON_LEN`] bytes.
    #[serde(default)]
    pub reason: String,
}

/// Longest report reason, bytes.
pub const MAX_REPORT_REASON_LEN: usize = 1000;

/// The answer to a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportResponse {
    /// The report's id in the moderation queue.
    pub id: u64,
}

/// One report in `GET /v1/admin/reports` (the queue) and `GET /v1/admin/reports/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportView {
    /// The report id.
    pub id: u64,
    /// Who reported.
    pub reporter: String,
    /// The server-verified sender of the reported message (the last item), or the claimed one
    /// when it does not verify.
    pub sender: String,
    /// The reporter's reason.
    pub reason: String,
    /// When it was received, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// `open`, or the action that resolved it: `dismiss`, `warn`, `suspend`.
    pub status: String,
    /// The reported message last, after up to 50 messages of context, oldest first.
    pub messages: Vec<ReportedMessage>,
}

/// One item of a report as the moderator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportedMessage {
    /// `message` (franked, from the other side), `own` (the reporter's own message: context,
    /// unverifiable) or `gap` (messages the reporter's device never received).
    pub kind: String,
    /// The text, for messages whose body decodes.
    pub text: Option<String>,
    /// The sender the body names.
    pub sender: Option<String>,
    /// The sender's device.
    pub sender_device: Option<u32>,
    /// The recipient the body names.
    pub recipient: Option<String>,
    /// The sender's clock, ms since the Unix epoch.
    pub sent_at_ms: Option<u64>,
    /// The server's time in its tag, ms since the Unix epoch.
    pub server_at_ms: Option<u64>,
    /// The position in the sender device's chain.
    pub seq: Option<u64>,
    /// `true` when verified, else the precise reason it failed (a string).
    #[schema(value_type = Object)]
    pub verified: serde_json::Value,
}

/// `POST /v1/admin/reports/{id}/resolve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// What to do.
    pub action: ModerationAction,
}

/// A moderator's decision on a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    /// No action.
    Dismiss,
    /// Record a warning against the sender.
    Warn,
    /// Suspend the sender: it can no longer send.
    Suspend,
}

/// `POST /v1/admin/franking-keys/rotate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RotateResponse {
    /// The new active key id.
    pub active: u32,
    /// Retired key ids that still verify until their grace period ends.
    pub retired: Vec<u32>,
}

/// `GET /v1/messages`: the oldest waiting envelopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FetchResponse {
    /// In queue order.
    pub envelopes: Vec<Envelope>,
    /// True when more are waiting.
    pub more: bool,
}

/// `POST /v1/messages/ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Envelope ids to delete from this device's queue.
    pub ids: Vec<u64>,
}

/// The answer to an ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AckResponse {
    /// How many envelopes were deleted (ids already gone are ignored).
    pub deleted: u64,
}

/// Frames the server sends on `/v1/ws` (JSON text frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A stored envelope; the client acks it by id.
    Envelope(Envelope),
    /// The queue has been delivered up to now; later envelopes are pushed as they arrive.
    Drained,
    /// The connection is closing because of a protocol error or a newer connection.
    Error(ErrorBody),
    /// A `send` frame was accepted: the message is durably stored (as `POST /v1/messages`
    /// answers 200).
    Sent(SendResponse),
    /// A `send` frame was refused (as `POST /v1/messages` answers 4xx/5xx); the connection
    /// stays open.
    SendFailed(SendFailure),
}

/// The answer to a refused `send` frame: what `POST /v1/messages` would have answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SendFailure {
    /// The message id of the refused send, as it was in the frame (possibly invalid or
    /// empty: that can be why it was refused).
    pub message_id: String,
    /// The HTTP status `POST /v1/messages` would have answered.
    pub status: u16,
    /// The stable error code (`bad_request`, `stale_devices`, `queue_full`, `rate_limited`, …).
    pub error: String,
    /// One sentence for humans.
    pub message: String,
    /// For `rate_limited` and `queue_full`: seconds to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// For `stale_devices`: devices to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_devices: Vec<u32>,
    /// For `stale_devices`: devices to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_devices: Vec<u32>,
}

/// Frames the client sends on `/v1/ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Delete these envelopes from the queue.
    Ack {
        /// Envelope ids.
        ids: Vec<u64>,
    },
    /// Send a message, exactly as `POST /v1/messages` with this body would: same checks,
    /// same rate limits, same idempotency by message id. The server answers with a `sent` or
    /// a `send_failed` frame carrying the message id; answers to several sends in flight may
    /// come in any order. A frame larger than the server's `ws_max_message_bytes` closes the
    /// connection (sends in flight on it get no answer): larger sends go over HTTP.
    Send {
        /// The send, as the body of `POST /v1/messages`.
        request: SendRequest,
    },
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code (`bad_request`, `unauthorized`, `not_found`,
    /// `rate_limited`, `payload_too_large`, `queue_full`, ...).
    pub error: String,
    /// One sentence for humans.
    pub message: String,
    /// For `rate_limited`: seconds to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

/// `GET /v1/admin/stats` (admin token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminStats {
    /// Registered accounts.
    pub accounts: u64,
    /// Registered devices.
    pub devices: u64,
    /// Envelopes waiting in all queues.
    pub queued: u64,
    /// Open WebSocket connections on this node.
    pub connections: u64,
    /// Write transactions committed since start.
    pub commits: u64,
    /// Write operations those transactions carried (operations / commits = mean group size).
    pub committed_operations: u64,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// The server version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["bob", "alice_1", "a.b-c", "x23456789012345678901234567890ab"] {
            assert_eq!(validate_username(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_username("ab"), Err(UsernameError::Length));
        assert_eq!(validate_username(&"a".repeat(33)), Err(UsernameError::Length));
        for bad in ["Bob", "1bob", "_bob", "bo b", "böb", "bob!"] {
            assert_eq!(validate_username(bad), Err(UsernameError::Charset), "{bad}");
        }
        assert!(validate_message_id("01HZX-abc_1"));
        assert!(!validate_message_id(""));
        assert!(!validate_message_id("a/b"));
        assert!(!validate_message_id(&"a".repeat(65)));
    }

    #[test]
    fn bytes_are_base64_and_redacted() {
        let b = Bytes(vec![1, 2, 3]);
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"AQID\"");
        assert_eq!(serde_json::from_str::<Bytes>("\"AQID\"").unwrap(), b);
        assert!(serde_json::from_str::<Bytes>("\"***\"").is_err());
        assert_eq!(format!("{b:?}"), "Bytes(3 bytes)");
        let f = ServerFrame::Drained;
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"type":"drained"}"#);
        let c: ClientFrame = serde_json::from_str(r#"{"type":"ack","ids":[1,2]}"#).unwrap();
        assert_eq!(c, ClientFrame::Ack { ids: vec![1, 2] });
    }

    #[test]
    fn send_frames_carry_the_request_and_its_answer() {
        let json = r#"{"type":"send","request":{"recipient":"bob","message_id":"m1",
            "envelopes":[{"device_id":1,"ciphertext":"AQID"}],"franking_tag":"AQID"}}"#;
        let c: ClientFrame = serde_json::from_str(json).unwrap();
        let ClientFrame::Send { request } = c else { panic!("a send frame") };
        assert_eq!(request.message_id, "m1");
        assert_eq!(request.envelopes[0].ciphertext, Bytes(vec![1, 2, 3]));
        // Unknown fields are refused at both levels, as on POST /v1/messages.
        let extra = json.replace(r#""recipient""#, r#""x":1,"recipient""#);
        assert!(serde_json::from_str::<ClientFrame>(&extra).is_err());
        let outer = json.replace(r#""type":"send","#, r#""type":"send","x":1,"#);
        assert!(serde_json::from_str::<ClientFrame>(&outer).is_err());
        let sent = ServerFrame::Sent(SendResponse {
            message_id: "m1".into(),
            server_time_ms: 5,
            duplicate: false,
        });
        assert_eq!(
            serde_json::to_string(&sent).unwrap(),
            r#"{"type":"sent","message_id":"m1","server_time_ms":5,"duplicate":false}"#
        );
        let failed = ServerFrame::SendFailed(SendFailure {
            message_id: "m1".into(),
            status: 409,
            error: "stale_devices".into(),
            message: "m".into(),
            retry_after_secs: None,
            missing_devices: vec![2],
            extra_devices: vec![],
        });
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            text,
            r#"{"type":"send_failed","message_id":"m1","status":409,"error":"stale_devices","message":"m","missing_devices":[2]}"#
        );
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), failed);
    }
}

/// A published key-transparency epoch: its root and the server's signature over
/// (epoch, root) (docs/KT.md §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KtSignedRoot {
    /// The epoch.
    pub epoch: u64,
    /// The directory's root hash (32 bytes).
    #[schema(value_type = String, format = Byte)]
    pub root: Bytes,
    /// Ed25519 signature by the KT signing key (64 bytes).
    #[schema(value_type = String, format = Byte)]
    pub signature: Bytes,
}

/// `GET /v1/kt/root`: the latest signed root and the directory's public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KtRoot {
    /// The latest epoch.
    pub root: KtSignedRoot,
    /// The VRF public key (32 bytes): lookup proofs verify under it.
    #[schema(value_type = String, format = Byte)]
    pub vrf_public_key: Bytes,
    /// The KT signing key's public half (Ed25519, 32 bytes).
    #[schema(value_type = String, format = Byte)]
    pub signing_key: Bytes,
}

/// `GET /v1/kt/lookup/{username}` and `GET /v1/kt/history`: a proof at the latest epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KtProofResponse {
    /// The username the proof is about.
    pub username: String,
    /// The epoch the proof is relative to, signed.
    pub root: KtSignedRoot,
    /// akd's `LookupProof` or `HistoryProof`, protobuf-encoded.
    #[schema(value_type = String, format = Byte)]
    pub proof: Bytes,
    /// The account identity key the server serves now (its committed value must be
    /// `kt_value(account_key, device_list)`, docs/KT.md §2).
    #[schema(value_type = String, format = Byte)]
    pub account_key: Bytes,
    /// The account-signed device list the server serves now.
    #[schema(value_type = String, format = Byte)]
    pub device_list: Bytes,
}

/// `GET /v1/kt/audit?start=&end=`: the append-only proof between two epochs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KtAuditResponse {
    /// The signed roots of epochs `start..=end`, in order.
    pub roots: Vec<KtSignedRoot>,
    /// akd's `AppendOnlyProof`, protobuf-encoded.
    #[schema(value_type = String, format = Byte)]
    pub proof: Bytes,
}

/// `POST /v1/admin/kt/publish`: what the publication did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KtPublishResponse {
    /// The latest epoch after publishing.
    pub root: KtSignedRoot,
    /// Entries changed by this epoch (0: nothing was waiting; no new epoch).
    pub updates: u64,
}
