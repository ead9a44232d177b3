//! Message franking (docs/PROTOCOL.md §12): verifiable abuse reports for end-to-end encrypted
//! messages.
//!
//! The construction is Commit-then-Encrypt with an HMAC commitment, as analysed in
//! Grubbs–Lu–Ristenpart, *Message Franking via Committing Authenticated Encryption*, CRYPTO 2017
//! ("GLR17": compactly committing AEAD, the CtE constructions, HMAC as the commitment), which
//! generalizes the scheme of Facebook/Meta's *Messenger Secret Conversations* technical
//! whitepaper (franking section, "the franking tag TF = HMAC-SHA256(NF, message)").
//!
//! ```text
//! sender device                      server (K_frank[kid])                  recipient device
//! body = 41 01 ‖ … ‖ seq ‖ prev ‖ text
//! NF   ← RNG(32)
//! TF   = HMAC(NF, "Parley franking commitment v1" ‖ body)
//! ct   = Session::encrypt(body ‖ NF, ad = "Parley franking AD v1" ‖ TF)
//!          ── TF, ct ─────────────►  RF = HMAC(K_frank, "Parley franking server tag v1" ‖ TF
//!                                          ‖ var(sender) ‖ u32 device ‖ var(recipient) ‖ u64 time)
//!                                     ── TF, RF, kid, sender, device, time, ct ──►
//!                                                           body ‖ NF = decrypt(ct, ad(TF))
//!                                                           open: TF ?= HMAC(NF, … ‖ body)
//! report = [(body ‖ NF, TF, RF, kid, sender, device, recipient, time), …]  ──►  verify_report
//! ```
//!
//! The body carries a hash chain per direction (sender device → recipient account): `seq`
//! counts the sender device's messages to that account and `prev` hashes the previous body, so
//! a moderator can check the order and contiguity of the reported context.

use core::fmt;

use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto;
use crate::encoding::{DecodeError, Reader, Writer};
use crate::padding::MAX_PLAINTEXT_LEN;

/// Domain of the franking commitment `TF` (docs/PROTOCOL.md §12.3).
pub const DOMAIN_FRANKING_COMMITMENT: &[u8] = b"Parley franking commitment v1";
/// Domain of the ratchet associated data that binds `TF` to the ciphertext (§12.3).
pub const DOMAIN_FRANKING_AD: &[u8] = b"Parley franking AD v1";
/// Domain of the server's franking tag `RF` (§12.4).
pub const DOMAIN_FRANKING_SERVER_TAG: &[u8] = b"Parley franking server tag v1";
/// Domain of the per-direction hash chain (§12.2).
pub const DOMAIN_FRANKING_CHAIN: &[u8] = b"Parley franking chain v1";

/// Object type of a franked body (`0x41`; the pre-franking client content is `0x40`).
pub const FRANKED_BODY_TYPE: u8 = 0x41;
const OBJ_REPORT: u8 = 0x42;
const OBJ_CHAIN_STATE: u8 = 0x24;
const VERSION: u8 = 1;

/// Length of the franking key NF, the commitment TF and the server tag RF.
pub const FRANKING_TAG_LEN: usize = 32;
/// Longest account username (sender, recipient, reporter) in franked bodies and reports.
pub const MAX_FRANKED_NAME_LEN: usize = 64;
/// Longest message id in a franked body.
pub const MAX_FRANKED_ID_LEN: usize = 64;
/// Longest text in a franked body, chosen so that every franked content (body ‖ NF) fits in
/// one ratchet message ([`MAX_PLAINTEXT_LEN`]).
pub const MAX_FRANKED_TEXT_LEN: usize = 65_024;
/// Longest encoded franked body.
pub const MAX_FRANKED_BODY_LEN: usize = 2
    + (4 + MAX_FRANKED_ID_LEN)
    + 8
    + (4 + MAX_FRANKED_NAME_LEN)
    + 4
    + (4 + MAX_FRANKED_NAME_LEN)
    + 8
    + 32
    + (4 + MAX_FRANKED_TEXT_LEN);
/// Longest franked content (body ‖ NF), the plaintext given to the ratchet.
pub const MAX_FRANKED_CONTENT_LEN: usize = MAX_FRANKED_BODY_LEN + FRANKING_TAG_LEN;
const _: () = assert!(MAX_FRANKED_CONTENT_LEN <= MAX_PLAINTEXT_LEN);

/// Most context items (messages before the reported one, and declared gaps) in a report.
pub const MAX_CONTEXT: usize = 50;
/// Context items a client includes unless the user asks for more.
pub const DEFAULT_CONTEXT: usize = 10;
/// Most items in a report: the reported message and at most [`MAX_CONTEXT`] before it.
pub const MAX_REPORT_ITEMS: usize = MAX_CONTEXT + 1;
/// Length of an encoded [`ChainState`].
pub const CHAIN_STATE_LEN: usize = 2 + 8 + 32;

const ITEM_FRANKED: u8 = 0x01;
const ITEM_OWN: u8 = 0x02;
const ITEM_GAP: u8 = 0x03;

/// Why a franked body could not be sealed, encoded or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrankingError {
    /// A field is longer than its documented maximum.
    #[error("{field} too long: {len} bytes, at most {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its maximum.
        max: usize,
    },
    /// The commitment TF does not open to this content: the receiver drops the message.
    #[error("franking commitment does not match the content")]
    CommitmentMismatch,
    /// The content or body is malformed.
    #[error("malformed franked content: {0}")]
    Malformed(#[from] DecodeError),
    /// A report has no items, too many, or does not end with a franked message.
    #[error("invalid report: {0}")]
    InvalidReport(&'static str),
    /// A hash chain's sequence number would overflow.
    #[error("franking chain exhausted")]
    ChainExhausted,
    /// An internal invariant failed (never expected).
    #[error("internal error")]
    Internal,
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), FrankingError> {
    if len > max { Err(FrankingError::FieldTooLong { field, len, max }) } else { Ok(()) }
}

fn read_string(r: &mut Reader<'_>, max: usize, field: &'static str) -> Result<String, DecodeError> {
    let bytes = r.var(max)?;
    core::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::InvalidValue(field))
}

// ---------------------------------------------------------------------------------------------
// Franked body and hash chain
// ---------------------------------------------------------------------------------------------

/// The content of a franked message, without NF: what the commitment covers.
///
/// Encoding (version 1, docs/PROTOCOL.md §12.1):
/// `41 01 ‖ var(message_id) ‖ u64 sent_at_ms ‖ var(sender) ‖ u32 sender_device ‖
/// var(recipient) ‖ u64 seq ‖ prev[32] ‖ var(text)`. Attachments will be a new version that
/// adds the attachment plaintext hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct FrankedBody {
    /// The client's message id (UTF-8, at most [`MAX_FRANKED_ID_LEN`] bytes).
    pub message_id: String,
    /// The sender's clock when the message was written (milliseconds since the Unix epoch).
    pub sent_at_ms: u64,
    /// The sender's account username (at most [`MAX_FRANKED_NAME_LEN`] bytes).
    pub sender: String,
    /// The sending device's id.
    pub sender_device: u32,
    /// The recipient's account username (at most [`MAX_FRANKED_NAME_LEN`] bytes).
    pub recipient: String,
    /// Position in the sender device → recipient account chain, from 0.
    pub seq: u64,
    /// [`chain_hash`] of the previous body in that chain; 32 zero bytes for `seq` 0.
    pub prev: [u8; 32],
    /// The message text (UTF-8, at most [`MAX_FRANKED_TEXT_LEN`] bytes).
    pub text: Zeroizing<String>,
}

impl fmt::Debug for FrankedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { message_id, sent_at_ms, sender, sender_device, recipient, seq, prev: _, text } =
            self;
        f.debug_struct("FrankedBody")
            .field("message_id", message_id)
            .field("sent_at_ms", sent_at_ms)
            .field("sender", sender)
            .field("sender_device", sender_device)
            .field("recipient", recipient)
            .field("seq", seq)
            .field("text_len", &text.len())
            .finish_non_exhaustive()
    }
}

impl FrankedBody {
    /// The deterministic encoding (the bytes TF commits to). Fails if a field is too long.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, FrankingError> {
        check_len("message_id", self.message_id.len(), MAX_FRANKED_ID_LEN)?;
        check_len("sender", self.sender.len(), MAX_FRANKED_NAME_LEN)?;
        check_len("recipient", self.recipient.len(), MAX_FRANKED_NAME_LEN)?;
        check_len("text", self.text.len(), MAX_FRANKED_TEXT_LEN)?;
        let len = 2
            + 4
            + self.message_id.len()
            + 8
            + 4
            + self.sender.len()
            + 4
            + 4
            + self.recipient.len()
            + 8
            + 32
            + 4
            + self.text.len();
        // Exact capacity, and room for NF, so the plaintext is never copied by a reallocation.
        let mut w =
            Writer::with_capacity(len + FRANKING_TAG_LEN).header(FRANKED_BODY_TYPE, VERSION);
        w.var(self.message_id.as_bytes())
            .u64(self.sent_at_ms)
            .var(self.sender.as_bytes())
            .u32(self.sender_device)
            .var(self.recipient.as_bytes())
            .u64(self.seq)
            .raw(&self.prev)
            .var(self.text.as_bytes());
        Ok(Zeroizing::new(w.into_vec()))
    }

    /// Decodes a version-1 franked body; rejects oversize fields, invalid UTF-8 and trailing
    /// bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(FRANKED_BODY_TYPE, VERSION)?;
        let message_id = read_string(&mut r, MAX_FRANKED_ID_LEN, "message_id")?;
        let sent_at_ms = r.u64()?;
        let sender = read_string(&mut r, MAX_FRANKED_NAME_LEN, "sender")?;
        let sender_device = r.u32()?;
        let recipient = read_string(&mut r, MAX_FRANKED_NAME_LEN, "recipient")?;
        let seq = r.u64()?;
        let prev = r.array::<32>()?;
        let text = Zeroizing::new(read_string(&mut r, MAX_FRANKED_TEXT_LEN, "text")?);
        r.finish()?;
        Ok(Self { message_id, sent_at_ms, sender, sender_device, recipient, seq, prev, text })
    }
}

/// The chain link to the next message: `SHA-256("Parley franking chain v1" ‖ body_bytes)`.
pub fn chain_hash(body_bytes: &[u8]) -> [u8; 32] {
    crypto::sha256(&[DOMAIN_FRANKING_CHAIN, body_bytes])
}

/// The sender's position in one hash chain (sender device → recipient account). The client
/// persists it ([`to_bytes`](Self::to_bytes)) per recipient account, fills `seq` and `prev` of
/// the next body from it, and calls [`advance`](Self::advance) with that body once it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    next_seq: u64,
    prev: [u8; 32],
}

impl Default for ChainState {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainState {
    /// The start of a chain: `seq` 0, `prev` all zero.
    pub fn new() -> Self {
        Self { next_seq: 0, prev: [0; 32] }
    }

    /// The `seq` of the next body.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The `prev` of the next body.
    pub fn prev(&self) -> &[u8; 32] {
        &self.prev
    }

    /// Moves past the body just sent (its encoding): `prev = chain_hash(body)`, `seq + 1`.
    pub fn advance(&mut self, body_bytes: &[u8]) -> Result<(), FrankingError> {
        let next = self.next_seq.checked_add(1).ok_or(FrankingError::ChainExhausted)?;
        self.prev = chain_hash(body_bytes);
        self.next_seq = next;
        Ok(())
    }

    /// `24 01 ‖ u64 next_seq ‖ prev[32]`.
    pub fn to_bytes(&self) -> [u8; CHAIN_STATE_LEN] {
        let mut w = Writer::with_capacity(CHAIN_STATE_LEN).header(OBJ_CHAIN_STATE, VERSION);
        w.u64(self.next_seq).raw(&self.prev);
        let mut out = [0u8; CHAIN_STATE_LEN];
        for (o, b) in out.iter_mut().zip(w.into_vec()) {
            *o = b;
        }
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_CHAIN_STATE, VERSION)?;
        let next_seq = r.u64()?;
        let prev = r.array::<32>()?;
        r.finish()?;
        Ok(Self { next_seq, prev })
    }
}

// ---------------------------------------------------------------------------------------------
// Sender and receiver
// ---------------------------------------------------------------------------------------------

/// The franking key NF and the commitment.
///
/// GLR17 (CtE with an HMAC commitment; Messenger Secret Conversations whitepaper, franking:
/// "TF = HMAC-SHA256(NF, message)"): HMAC-SHA256 keyed with the opening NF is a binding
/// commitment to the message, because finding two (NF, body) pairs with the same tag is finding
/// an HMAC-SHA256 collision. The domain string separates it from every other Parley MAC.
fn commitment(nf: &[u8; 32], body_bytes: &[u8]) -> [u8; 32] {
    crypto::hmac_sha256(nf, &[DOMAIN_FRANKING_COMMITMENT, body_bytes])
}

/// A sealed message: the plaintext for the ratchet and the commitment that travels in clear.
pub struct Sealed {
    content: Zeroizing<Vec<u8>>,
    body_len: usize,
    tf: [u8; 32],
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { content: _, body_len, tf } = self;
        f.debug_struct("Sealed")
            .field("body_len", body_len)
            .field("tf", &crypto_hex(tf))
            .field("content", &"***")
            .finish()
    }
}

impl Sealed {
    /// `body ‖ NF`: the plaintext to give to [`Session::encrypt`](crate::Session::encrypt).
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// The commitment TF, sent in clear next to the ciphertext and bound into it through
    /// [`ratchet_ad`].
    pub fn tf(&self) -> &[u8; 32] {
        &self.tf
    }

    /// The encoded body (for [`ChainState::advance`] and the sender's own history).
    pub fn body_bytes(&self) -> &[u8] {
        self.content.get(..self.body_len).unwrap_or_default()
    }
}

/// Encodes `body`, draws NF (32 bytes) from `rng` and commits:
/// `TF = HMAC-SHA256(NF, "Parley franking commitment v1" ‖ body_bytes)`.
///
/// ```
/// use parley_proto::*;
/// let mut rng = rand::rng();
/// // Sender: the next body of its chain to "bob", sealed.
/// let mut chain = ChainState::new();
/// let body = FrankedBody {
///     message_id: "m1".into(), sent_at_ms: 1_800_000_000_000,
///     sender: "alice".into(), sender_device: 1, recipient: "bob".into(),
///     seq: chain.next_seq(), prev: *chain.prev(), text: "hi".to_string().into(),
/// };
/// let sealed = seal(&mut rng, &body)?;
/// chain.advance(sealed.body_bytes())?;
/// // (encrypt sealed.content() with ad = ratchet_ad(sealed.tf()); send TF with it)
///
/// // Server: tags TF with what it saw.
/// let key = FrankingKey::generate(&mut rng);
/// let time = 1_800_000_000_123;
/// let rf = server_tag(&key, sealed.tf(), "alice", 1, "bob", time);
///
/// // Receiver: (decrypt with ratchet_ad(tf)), then open; later, report.
/// let opened = open(sealed.content(), sealed.tf())?;
/// assert_eq!(opened.body().text.as_str(), "hi");
/// let report = Report { reporter: "bob".into(), items: vec![ReportItem::Franked {
///     content: opened.content().to_vec(), tf: *sealed.tf(), rf, kid: 1,
///     sender: "alice".into(), sender_device: 1, recipient: "bob".into(), server_time_ms: time,
/// }] };
/// let report = Report::decode(&report.encode()?)?;
///
/// // Moderator.
/// let verdicts = verify_report(&report, |kid, _| {
///     if kid == 1 { KeyStatus::Active(&key) } else { KeyStatus::Unknown }
/// });
/// assert_eq!(verdicts, [ItemVerdict::Verified]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn seal<R: CryptoRng + ?Sized>(
    rng: &mut R,
    body: &FrankedBody,
) -> Result<Sealed, FrankingError> {
    let nf = Zeroizing::new(crypto::random_array::<FRANKING_TAG_LEN, R>(rng));
    seal_with_nf(body, &nf)
}

/// [`seal`] with a given NF (test vectors).
pub(crate) fn seal_with_nf(body: &FrankedBody, nf: &[u8; 32]) -> Result<Sealed, FrankingError> {
    let mut content = body.encode()?;
    let body_len = content.len();
    let tf = commitment(nf, &content);
    // Messenger whitepaper (franking): NF travels inside the encrypted payload, next to the
    // message it opens.
    content.extend_from_slice(nf);
    Ok(Sealed { content, body_len, tf })
}

/// The associated data for [`Session::encrypt`](crate::Session::encrypt) /
/// [`decrypt`](crate::Session::decrypt): `"Parley franking AD v1" ‖ TF`.
///
/// GLR17 (CtE): the commitment is authenticated as associated data of the (key-committing,
/// Encrypt-then-HMAC, docs/PROTOCOL.md §5.6) ratchet encryption, so a TF changed in transit
/// fails decryption and a ciphertext cannot be presented under another commitment.
pub fn ratchet_ad(tf: &[u8; 32]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(DOMAIN_FRANKING_AD.len() + FRANKING_TAG_LEN);
    ad.extend_from_slice(DOMAIN_FRANKING_AD);
    ad.extend_from_slice(tf);
    ad
}

/// A received message whose commitment opened.
pub struct Opened {
    body: FrankedBody,
    content: Zeroizing<Vec<u8>>,
    body_len: usize,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { body, content: _, body_len } = self;
        f.debug_struct("Opened")
            .field("body", body)
            .field("body_len", body_len)
            .field("nf", &"***")
            .finish()
    }
}

impl Opened {
    /// The decoded body.
    pub fn body(&self) -> &FrankedBody {
        &self.body
    }

    /// The encoded body (what TF commits to, and what the next `prev` hashes).
    pub fn body_bytes(&self) -> &[u8] {
        self.content.get(..self.body_len).unwrap_or_default()
    }

    /// The opening NF; the one exit for it (it goes into a report, nowhere else).
    pub fn nf(&self) -> &[u8; 32] {
        self.content.split_last_chunk::<FRANKING_TAG_LEN>().map_or(&[0u8; 32], |(_, nf)| nf)
    }

    /// `body ‖ NF`, as a report item carries it.
    pub fn content(&self) -> &[u8] {
        &self.content
    }
}

/// Receiver side, after [`Session::decrypt`](crate::Session::decrypt) with
/// [`ratchet_ad`]`(tf)`: splits `content = body ‖ NF`, recomputes TF and compares in constant
/// time, then decodes the body. [`FrankingError::CommitmentMismatch`] means the sender
/// committed to something else: the receiver drops the message (it could not be reported).
///
/// The caller still checks `body.sender`, `sender_device` and `recipient` against the session
/// and the server's envelope.
pub fn open(content: &[u8], tf: &[u8; 32]) -> Result<Opened, FrankingError> {
    let (body, body_bytes) = open_parts(content, tf)?;
    let body_len = body_bytes.len();
    Ok(Opened { body, content: Zeroizing::new(content.to_vec()), body_len })
}

// ---------------------------------------------------------------------------------------------
// Server tag
// ---------------------------------------------------------------------------------------------

/// The server's franking key `K_frank` (32 bytes), zeroized on drop. The server names each key
/// with a `u32` key id (kid) that travels with every tag.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct FrankingKey([u8; 32]);

impl fmt::Debug for FrankingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrankingKey(***)")
    }
}

impl FrankingKey {
    /// A fresh key from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(crypto::random_array::<32, R>(rng))
    }

    /// A stored key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key; the one exit, for storage.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

fn server_tag_parts<'a>(
    tf: &'a [u8; 32],
    sender: &'a [u8],
    sender_len: &'a [u8; 4],
    device: &'a [u8; 4],
    recipient: &'a [u8],
    recipient_len: &'a [u8; 4],
    time: &'a [u8; 8],
) -> [&'a [u8]; 8] {
    [DOMAIN_FRANKING_SERVER_TAG, tf, sender_len, sender, device, recipient_len, recipient, time]
}

fn len_u32(s: &str) -> [u8; 4] {
    u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes()
}

/// The server's tag at relay time (Messenger whitepaper, franking: the server MACs the
/// commitment with the conversation's identifiers and a timestamp under a key only it holds):
/// `RF = HMAC-SHA256(K_frank, "Parley franking server tag v1" ‖ TF ‖ var(sender) ‖
/// u32 sender_device ‖ var(recipient) ‖ u64 server_time_ms)`.
pub fn server_tag(
    key: &FrankingKey,
    tf: &[u8; 32],
    sender: &str,
    sender_device: u32,
    recipient: &str,
    server_time_ms: u64,
) -> [u8; 32] {
    let (sl, rl) = (len_u32(sender), len_u32(recipient));
    let (dev, time) = (sender_device.to_be_bytes(), server_time_ms.to_be_bytes());
    let parts =
        server_tag_parts(tf, sender.as_bytes(), &sl, &dev, recipient.as_bytes(), &rl, &time);
    crypto::hmac_sha256(&key.0, &parts)
}

/// Checks a server tag in constant time.
pub fn verify_server_tag(
    key: &FrankingKey,
    tf: &[u8; 32],
    sender: &str,
    sender_device: u32,
    recipient: &str,
    server_time_ms: u64,
    rf: &[u8; 32],
) -> bool {
    let (sl, rl) = (len_u32(sender), len_u32(recipient));
    let (dev, time) = (sender_device.to_be_bytes(), server_time_ms.to_be_bytes());
    let parts =
        server_tag_parts(tf, sender.as_bytes(), &sl, &dev, recipient.as_bytes(), &rl, &time);
    crypto::hmac_sha256_verify(&key.0, &parts, rf)
}

fn crypto_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------------------------

/// One entry of a [`Report`].
#[derive(Clone, PartialEq, Eq)]
pub enum ReportItem {
    /// A message the reporter received, with everything needed to verify it.
    Franked {
        /// `body ‖ NF`, as decrypted.
        content: Vec<u8>,
        /// The commitment TF.
        tf: [u8; 32],
        /// The server tag RF.
        rf: [u8; 32],
        /// The id of the server key that made RF.
        kid: u32,
        /// The sender account, as the server tagged it.
        sender: String,
        /// The sending device, as the server tagged it.
        sender_device: u32,
        /// The recipient account, as the server tagged it.
        recipient: String,
        /// The server's relay time, as tagged (milliseconds since the Unix epoch).
        server_time_ms: u64,
    },
    /// A message the reporter sent (its encoded body). Shown as the reporter's; unverifiable.
    Own {
        /// The encoded [`FrankedBody`].
        body_bytes: Vec<u8>,
    },
    /// Messages the reporter's client itself saw missing (`from_seq ..= to_seq` of one sender
    /// device's chain). Shown as a gap, not as a forgery.
    Gap {
        /// The sender account of the chain.
        sender: String,
        /// The sending device of the chain.
        sender_device: u32,
        /// First missing `seq`.
        from_seq: u64,
        /// Last missing `seq` (inclusive, ≥ `from_seq`).
        to_seq: u64,
    },
}

impl fmt::Debug for ReportItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Franked {
                content,
                tf: _,
                rf: _,
                kid,
                sender,
                sender_device,
                recipient,
                server_time_ms,
            } => f
                .debug_struct("Franked")
                .field("content_len", &content.len())
                .field("kid", kid)
                .field("sender", sender)
                .field("sender_device", sender_device)
                .field("recipient", recipient)
                .field("server_time_ms", server_time_ms)
                .finish_non_exhaustive(),
            Self::Own { body_bytes } => {
                f.debug_struct("Own").field("body_len", &body_bytes.len()).finish()
            }
            Self::Gap { sender, sender_device, from_seq, to_seq } => f
                .debug_struct("Gap")
                .field("sender", sender)
                .field("sender_device", sender_device)
                .field("from_seq", from_seq)
                .field("to_seq", to_seq)
                .finish(),
        }
    }
}

/// An abuse report: items in chronological order, oldest first; the last item is the
/// reported (franked) message, preceded by at most [`MAX_CONTEXT`] context items.
///
/// Encoding (docs/PROTOCOL.md §12.5): `42 01 ‖ var(reporter) ‖ u32 n ‖ item × n`, with
/// `01 ‖ var(content) ‖ TF ‖ RF ‖ u32 kid ‖ var(sender) ‖ u32 sender_device ‖ var(recipient) ‖
/// u64 server_time_ms` (franked), `02 ‖ var(body)` (own) and `03 ‖ var(sender) ‖
/// u32 sender_device ‖ u64 from_seq ‖ u64 to_seq` (gap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The reporting account (the recipient of the franked items).
    pub reporter: String,
    /// The items, oldest first, the reported message last.
    pub items: Vec<ReportItem>,
}

impl Report {
    /// The deterministic encoding. Fails on an empty report, more than [`MAX_REPORT_ITEMS`]
    /// items, a last item that is not franked, an inverted gap or an oversize field.
    pub fn encode(&self) -> Result<Vec<u8>, FrankingError> {
        check_len("reporter", self.reporter.len(), MAX_FRANKED_NAME_LEN)?;
        check_len("items", self.items.len(), MAX_REPORT_ITEMS)?;
        if !matches!(self.items.last(), Some(ReportItem::Franked { .. })) {
            return Err(FrankingError::InvalidReport("the last item must be a franked message"));
        }
        let n = u32::try_from(self.items.len()).map_err(|_| FrankingError::Internal)?;
        let mut w = Writer::default().header(OBJ_REPORT, VERSION);
        w.var(self.reporter.as_bytes()).u32(n);
        for item in &self.items {
            match item {
                ReportItem::Franked {
                    content,
                    tf,
                    rf,
                    kid,
                    sender,
                    sender_device,
                    recipient,
                    server_time_ms,
                } => {
                    check_len("content", content.len(), MAX_FRANKED_CONTENT_LEN)?;
                    check_len("sender", sender.len(), MAX_FRANKED_NAME_LEN)?;
                    check_len("recipient", recipient.len(), MAX_FRANKED_NAME_LEN)?;
                    w.u8(ITEM_FRANKED)
                        .var(content)
                        .raw(tf)
                        .raw(rf)
                        .u32(*kid)
                        .var(sender.as_bytes())
                        .u32(*sender_device)
                        .var(recipient.as_bytes())
                        .u64(*server_time_ms);
                }
                ReportItem::Own { body_bytes } => {
                    check_len("body", body_bytes.len(), MAX_FRANKED_BODY_LEN)?;
                    w.u8(ITEM_OWN).var(body_bytes);
                }
                ReportItem::Gap { sender, sender_device, from_seq, to_seq } => {
                    check_len("sender", sender.len(), MAX_FRANKED_NAME_LEN)?;
                    if from_seq > to_seq {
                        return Err(FrankingError::InvalidReport("gap ends before it starts"));
                    }
                    w.u8(ITEM_GAP)
                        .var(sender.as_bytes())
                        .u32(*sender_device)
                        .u64(*from_seq)
                        .u64(*to_seq);
                }
            }
        }
        Ok(w.into_vec())
    }

    /// Decodes a report, with the same rules as [`encode`](Self::encode) and every length
    /// bounded before it is read.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.header(OBJ_REPORT, VERSION)?;
        let reporter = read_string(&mut r, MAX_FRANKED_NAME_LEN, "reporter")?;
        let n = r.count(MAX_REPORT_ITEMS)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let item = match r.u8()? {
                ITEM_FRANKED => ReportItem::Franked {
                    content: r.var(MAX_FRANKED_CONTENT_LEN)?.to_vec(),
                    tf: r.array::<32>()?,
                    rf: r.array::<32>()?,
                    kid: r.u32()?,
                    sender: read_string(&mut r, MAX_FRANKED_NAME_LEN, "sender")?,
                    sender_device: r.u32()?,
                    recipient: read_string(&mut r, MAX_FRANKED_NAME_LEN, "recipient")?,
                    server_time_ms: r.u64()?,
                },
                ITEM_OWN => ReportItem::Own { body_bytes: r.var(MAX_FRANKED_BODY_LEN)?.to_vec() },
                ITEM_GAP => {
                    let sender = read_string(&mut r, MAX_FRANKED_NAME_LEN, "sender")?;
                    let sender_device = r.u32()?;
                    let from_seq = r.u64()?;
                    let to_seq = r.u64()?;
                    if from_seq > to_seq {
                        return Err(DecodeError::InvalidValue("gap"));
                    }
                    ReportItem::Gap { sender, sender_device, from_seq, to_seq }
                }
                _ => return Err(DecodeError::InvalidValue("report item kind")),
            };
            items.push(item);
        }
        if !matches!(items.last(), Some(ReportItem::Franked { .. })) {
            return Err(DecodeError::InvalidValue("last report item"));
        }
        r.finish()?;
        Ok(Self { reporter, items })
    }
}

/// What the moderator's key store says about a key id at a relay time.
#[derive(Debug, Clone, Copy)]
pub enum KeyStatus<'k> {
    /// The key, valid at that time.
    Active(&'k FrankingKey),
    /// The key existed but is past its grace period: its tags are no longer accepted.
    Retired,
    /// No such key id.
    Unknown,
}

/// The moderator's verdict on one report item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ItemVerdict {
    /// The server tag, the commitment, sender, recipient and chain link all check out.
    Verified,
    /// The item's key id is unknown.
    UnknownKey(u32),
    /// The item's key is retired (past its grace period).
    RetiredKey(u32),
    /// The server tag does not verify: sender, device, recipient, time or TF were altered, or
    /// the tag is forged.
    ServerTagInvalid,
    /// The content does not open the commitment: altered plaintext, or a tag from another
    /// message.
    CommitmentMismatch,
    /// The content opens the commitment but the body does not decode.
    MalformedBody,
    /// The body's sender or device differ from the server-tagged ones.
    SenderMismatch,
    /// The tagged recipient or the body's recipient is not the reporter (a tag replayed from
    /// another recipient's copy).
    RecipientMismatch,
    /// Out of order within its sender device's chain (a `seq` not above an earlier item's, or
    /// not below a later item's).
    Reordered,
    /// `missing` messages of its chain are absent just before it and no declared gap covers
    /// them: messages were removed from the context.
    HiddenGap {
        /// How many `seq` values are missing and undeclared.
        missing: u64,
    },
    /// Its `seq` follows the previous item's but `prev` is not the hash of that item's body
    /// (or a `seq` 0 body has a non-zero `prev`).
    ChainBroken,
    /// The reporter's own message: shown, but nothing can be verified.
    Unverifiable,
    /// A gap the reporter's client declared.
    ObservedGap,
}

impl ItemVerdict {
    /// True for [`ItemVerdict::Verified`].
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified)
    }
}

impl fmt::Display for ItemVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verified => f.write_str("verified"),
            Self::UnknownKey(kid) => write!(f, "unknown server key {kid}"),
            Self::RetiredKey(kid) => write!(f, "server key {kid} is retired"),
            Self::ServerTagInvalid => {
                f.write_str("server tag invalid (sender, recipient or time altered, or forged)")
            }
            Self::CommitmentMismatch => {
                f.write_str("content does not match its commitment (altered or swapped)")
            }
            Self::MalformedBody => f.write_str("malformed message body"),
            Self::SenderMismatch => f.write_str("message sender differs from the server's"),
            Self::RecipientMismatch => f.write_str("message was not sent to the reporter"),
            Self::Reordered => f.write_str("out of order"),
            Self::HiddenGap { missing } => {
                write!(f, "{missing} message(s) removed before this one")
            }
            Self::ChainBroken => f.write_str("chain link broken"),
            Self::Unverifiable => f.write_str("reporter's own message (unverifiable)"),
            Self::ObservedGap => f.write_str("gap observed by the reporter"),
        }
    }
}

/// A verified franked item's place in its chain.
struct Link<'a> {
    index: usize,
    sender: &'a str,
    device: u32,
    seq: u64,
    prev: [u8; 32],
    hash: [u8; 32],
}

/// Opens `content` against `tf` without copying it.
fn open_parts<'c>(
    content: &'c [u8],
    tf: &[u8; 32],
) -> Result<(FrankedBody, &'c [u8]), FrankingError> {
    check_len("content", content.len(), MAX_FRANKED_CONTENT_LEN)?;
    let (body_bytes, nf) =
        content.split_last_chunk::<FRANKING_TAG_LEN>().ok_or(DecodeError::Truncated)?;
    // GLR17 (ccAEAD verification of the opening) / Messenger whitepaper (franking): recompute
    // TF from NF and the body; constant-time comparison.
    if !crypto::hmac_sha256_verify(nf, &[DOMAIN_FRANKING_COMMITMENT, body_bytes], tf) {
        return Err(FrankingError::CommitmentMismatch);
    }
    // Only committed bytes are parsed.
    Ok((FrankedBody::decode(body_bytes)?, body_bytes))
}

fn verify_franked<'a, 'k>(
    index: usize,
    reporter: &str,
    item: &'a ReportItem,
    keys: &impl Fn(u32, u64) -> KeyStatus<'k>,
) -> Result<Link<'a>, ItemVerdict> {
    let ReportItem::Franked {
        content,
        tf,
        rf,
        kid,
        sender,
        sender_device,
        recipient,
        server_time_ms,
    } = item
    else {
        return Err(ItemVerdict::MalformedBody);
    };
    let key = match keys(*kid, *server_time_ms) {
        KeyStatus::Active(k) => k,
        KeyStatus::Retired => return Err(ItemVerdict::RetiredKey(*kid)),
        KeyStatus::Unknown => return Err(ItemVerdict::UnknownKey(*kid)),
    };
    // Messenger whitepaper (franking): the moderator first checks the server's tag over TF and
    // the conversation identifiers, then that the reported content opens TF.
    if !verify_server_tag(key, tf, sender, *sender_device, recipient, *server_time_ms, rf) {
        return Err(ItemVerdict::ServerTagInvalid);
    }
    if recipient != reporter {
        return Err(ItemVerdict::RecipientMismatch);
    }
    let (body, body_bytes) = open_parts(content, tf).map_err(|e| match e {
        FrankingError::CommitmentMismatch => ItemVerdict::CommitmentMismatch,
        _ => ItemVerdict::MalformedBody,
    })?;
    if body.sender != *sender || body.sender_device != *sender_device {
        return Err(ItemVerdict::SenderMismatch);
    }
    if body.recipient != reporter {
        return Err(ItemVerdict::RecipientMismatch);
    }
    Ok(Link {
        index,
        sender,
        device: *sender_device,
        seq: body.seq,
        prev: body.prev,
        hash: chain_hash(body_bytes),
    })
}

/// How many of `lo ..= hi` no interval of `gaps` (sorted by start) covers.
fn uncovered(lo: u64, hi: u64, gaps: &[(u64, u64)]) -> u64 {
    let mut missing = 0u64;
    let mut next = lo;
    for &(from, to) in gaps {
        if to < next {
            continue;
        }
        if from > hi {
            break;
        }
        missing = missing.saturating_add(from.saturating_sub(next));
        if to >= hi {
            return missing;
        }
        next = to.saturating_add(1);
    }
    missing.saturating_add(hi.saturating_sub(next).saturating_add(1))
}

/// Verifies a report (docs/PROTOCOL.md §12.6). Returns one verdict per item, in order.
///
/// Per item: franked items have their key looked up (`keys(kid, server_time_ms)`), their
/// server tag checked, then their commitment, sender and recipient; own items are
/// [`Unverifiable`](ItemVerdict::Unverifiable) and gaps [`ObservedGap`](ItemVerdict::ObservedGap).
/// Then, per chain (sender account and device) among the franked items that passed: order
/// ([`Reordered`](ItemVerdict::Reordered)), contiguity
/// ([`HiddenGap`](ItemVerdict::HiddenGap), unless declared gaps cover the hole) and links
/// ([`ChainBroken`](ItemVerdict::ChainBroken)). A failed item does not count as present in its
/// chain.
pub fn verify_report<'k>(
    report: &Report,
    keys: impl Fn(u32, u64) -> KeyStatus<'k>,
) -> Vec<ItemVerdict> {
    let mut verdicts = Vec::with_capacity(report.items.len());
    let mut links: Vec<Link<'_>> = Vec::new();
    for (index, item) in report.items.iter().enumerate() {
        let verdict = match item {
            ReportItem::Franked { .. } => {
                match verify_franked(index, &report.reporter, item, &keys) {
                    Ok(link) => {
                        links.push(link);
                        ItemVerdict::Verified
                    }
                    Err(v) => v,
                }
            }
            ReportItem::Own { body_bytes } => match FrankedBody::decode(body_bytes) {
                Ok(_) => ItemVerdict::Unverifiable,
                Err(_) => ItemVerdict::MalformedBody,
            },
            ReportItem::Gap { .. } => ItemVerdict::ObservedGap,
        };
        verdicts.push(verdict);
    }

    let mut streams: Vec<(&str, u32)> = links.iter().map(|l| (l.sender, l.device)).collect();
    streams.sort_unstable();
    streams.dedup();
    for (sender, device) in streams {
        let chain: Vec<&Link<'_>> =
            links.iter().filter(|l| l.sender == sender && l.device == device).collect();
        let mut gaps: Vec<(u64, u64)> = report
            .items
            .iter()
            .filter_map(|i| match i {
                ReportItem::Gap { sender: s, sender_device: d, from_seq, to_seq }
                    if s == sender && *d == device =>
                {
                    Some((*from_seq, *to_seq))
                }
                _ => None,
            })
            .collect();
        gaps.sort_unstable();
        let mut mark = |index: usize, v: ItemVerdict| {
            if let Some(slot) = verdicts.get_mut(index)
                && slot.is_verified()
            {
                *slot = v;
            }
        };
        // Order: report order must be seq order (`chain` is in report order).
        for (i, l) in chain.iter().enumerate() {
            let before = chain.iter().take(i).any(|e| e.seq >= l.seq);
            let after = chain.iter().skip(i + 1).any(|e| e.seq <= l.seq);
            if before || after {
                mark(l.index, ItemVerdict::Reordered);
            }
        }
        // Contiguity and links, in seq order (so one misplaced item does not also make its
        // neighbours look like gaps).
        let mut sorted = chain.clone();
        sorted.sort_by_key(|l| (l.seq, l.index));
        sorted.dedup_by_key(|l| l.seq);
        if let Some(first) = sorted.first()
            && first.seq == 0
            && first.prev != [0u8; 32]
        {
            mark(first.index, ItemVerdict::ChainBroken);
        }
        for pair in sorted.windows(2) {
            let [p, c] = pair else { continue };
            if c.seq == p.seq.saturating_add(1) {
                if !crypto::ct_eq(&c.prev, &p.hash) {
                    mark(c.index, ItemVerdict::ChainBroken);
                }
            } else {
                let missing = uncovered(p.seq.saturating_add(1), c.seq.saturating_sub(1), &gaps);
                if missing > 0 {
                    mark(c.index, ItemVerdict::HiddenGap { missing });
                }
            }
        }
    }
    verdicts
}
