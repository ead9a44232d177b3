//! One simulated device of `parley bench`: real identity keys, a real registration (through
//! the admin API), a real PQXDH session to its peer and a real WebSocket. The message path is
//! the client's (`parley-client`): a franked body (PROTOCOL.md §12) sealed, then encrypted
//! by the header-encrypted Double Ratchet with the commitment in the associated data; the
//! receiver decrypts, opens the commitment and checks the body against its envelope. What the
//! bench leaves out is the client's local store (each message would be one more SQLite
//! transaction on the same two cores).

use anyhow::{Context, Result, anyhow, bail};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use parley_api::{
    BundlesResponse, Bytes, ClientFrame, DeviceUpload, OutgoingEnvelope, RegisterRequest,
    RegisterResponse, SendRequest, ServerFrame,
};
use parley_proto::{
    AccountIdentity, AccountPublicKey, ChainState, DeviceCertificate, DeviceIdentity, DeviceList,
    FrankedBody, MessageKind, PrekeyBundleIn, PrekeyStore, Session,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use zeroize::Zeroizing;

/// A WebSocket to the server.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The device id every bench account uses (one device per account).
const DEVICE_ID: u32 = 1;

/// A provisioned device: its keys and its bearer token.
pub(crate) struct Device {
    pub(crate) username: String,
    device: DeviceIdentity,
    cert: DeviceCertificate,
    prekeys: PrekeyStore,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("username", &self.username).finish_non_exhaustive()
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Device {
    /// Generates keys (a minimal prekey set: the signed prekey and the last-resort ML-KEM
    /// prekey, no one-time prekeys) and creates the account through `POST /v1/admin/accounts`.
    pub(crate) async fn provision(
        http: &reqwest::Client,
        server: &str,
        admin_token: &str,
        username: String,
    ) -> Result<Self> {
        let (device, cert, prekeys, req) = {
            let mut rng = rand::rng();
            let account = AccountIdentity::generate(&mut rng);
            let device = DeviceIdentity::generate(&mut rng);
            let cert = account.certify(DEVICE_ID, device.public());
            let list = account
                .sign_device_list(1, vec![(DEVICE_ID, device.public().clone())])
                .map_err(|e| anyhow!("device list: {e}"))?;
            let mut prekeys = PrekeyStore::new();
            let spk = prekeys
                .generate_signed_prekey(&mut rng, now_s(), &device)
                .map_err(|e| anyhow!("signed prekey: {e}"))?;
            let lr = prekeys
                .generate_last_resort_kem(&mut rng, now_s(), &device)
                .map_err(|e| anyhow!("last-resort prekey: {e}"))?;
            let req = RegisterRequest {
                username: username.clone(),
                account_key: Bytes(account.public().as_bytes().to_vec()),
                device_list: Bytes(list.encode()),
                device: DeviceUpload {
                    certificate: Bytes(cert.encode()),
                    signed_prekey: Bytes(spk.encode()),
                    last_resort_kem: Bytes(lr.encode()),
                    one_time_prekeys: Vec::new(),
                    one_time_kem_prekeys: Vec::new(),
                },
                age_class: parley_api::AgeClass::Adult,
            };
            (device, cert, prekeys, req)
        };
        let resp = http
            .post(format!("{server}/v1/admin/accounts"))
            .bearer_auth(admin_token)
            .json(&req)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {server}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Option<parley_api::ErrorBody> = resp.json().await.ok();
            bail!(
                "the server refused to create a bench account: {} ({status})",
                body.map(|b| b.message).unwrap_or_default()
            );
        }
        let r: RegisterResponse = resp.json().await.context("malformed registration answer")?;
        Ok(Self { username, device, cert, prekeys, token: Zeroizing::new(r.token) })
    }

    /// The bearer token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Fetches `peer`'s bundle and starts a session to it (PQXDH, `parley_proto::initiate`).
    pub(crate) async fn start_session(
        &self,
        http: &reqwest::Client,
        server: &str,
        peer: &str,
    ) -> Result<Session> {
        let resp = http
            .get(format!("{server}/v1/accounts/{peer}/bundles"))
            .bearer_auth(self.token.as_str())
            .send()
            .await
            .context("bundle fetch")?;
        if !resp.status().is_success() {
            bail!("bundle fetch for {peer}: {}", resp.status());
        }
        let b: BundlesResponse = resp.json().await.context("malformed bundles")?;
        let key: [u8; 32] =
            b.account_key.0.as_slice().try_into().map_err(|_| anyhow!("malformed account key"))?;
        let account = AccountPublicKey::from_bytes(key).map_err(|e| anyhow!("account key: {e}"))?;
        let list = DeviceList::decode_verified(b.device_list.as_slice(), &account)
            .map_err(|e| anyhow!("device list: {e}"))?;
        let d = b.devices.first().ok_or_else(|| anyhow!("{peer} has no device"))?;
        let bundle = PrekeyBundleIn::decode(d.bundle.as_slice())
            .and_then(|x| x.validate(Some(&account)))
            .map_err(|e| anyhow!("bundle: {e}"))?;
        if !list.contains(bundle.certificate()) {
            bail!("{peer}'s device is not in its signed device list");
        }
        let mut rng = rand::rng();
        parley_proto::initiate(&mut rng, &self.device, &self.cert, &bundle)
            .map_err(|e| anyhow!("PQXDH: {e}"))
    }

    /// Splits into the halves the sender and receiver tasks own.
    pub(crate) fn into_receiver(self) -> Receiver {
        Receiver {
            username: self.username,
            device: self.device,
            cert: self.cert,
            prekeys: self.prekeys,
            session: None,
        }
    }
}

/// The read buffer of a bench connection.
const READ_BUFFER: usize = 16 * 1024;

/// Opens an authenticated delivery WebSocket.
pub(crate) async fn connect_ws(server: &str, token: &str) -> Result<Ws> {
    let url = format!("{}/v1/ws", server.replacen("http", "ws", 1));
    let mut req = url.as_str().into_client_request().context("WebSocket request")?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow!("the token is not a valid header value"))?;
    req.headers_mut().insert("authorization", value);
    // TCP_NODELAY (the last argument): send frames are small and must not wait for the
    // server's delayed ACK. A read buffer of 16 KiB instead of tungstenite's 128 KiB: it
    // zero-fills its free capacity before every read, which for small frames cost more than
    // the read.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .with_context(|| format!("cannot open a WebSocket to {server}"))?;
    Ok(ws)
}

/// The sending half: the session to the peer and the franking chain.
pub(crate) struct Sender {
    pub(crate) username: String,
    pub(crate) peer: String,
    pub(crate) token: Zeroizing<String>,
    session: Option<Session>,
    chain: ChainState,
    text: String,
    /// Ciphertext length used in plaintext mode (that of an encrypted message of this size).
    plain_len: usize,
}

impl Sender {
    pub(crate) fn new(
        username: String,
        peer: String,
        token: &str,
        session: Option<Session>,
        size: usize,
        plain_len: usize,
    ) -> Self {
        Self {
            username,
            peer,
            token: Zeroizing::new(token.to_string()),
            session,
            chain: ChainState::new(),
            text: "x".repeat(size),
            plain_len,
        }
    }

    /// Builds the send request for message `id` (encrypted when a session is present, else a
    /// payload of the same length in clear — `--plaintext`).
    pub(crate) fn message(&mut self, id: &str) -> Result<SendRequest> {
        match &mut self.session {
            Some(session) => franked_message(
                session,
                &mut self.chain,
                &self.username,
                &self.peer,
                id,
                &self.text,
            ),
            None => {
                let mut ct = vec![0u8; self.plain_len];
                let n = self.text.len().min(ct.len());
                if let (Some(dst), Some(src)) = (ct.get_mut(..n), self.text.as_bytes().get(..n)) {
                    dst.copy_from_slice(src);
                }
                Ok(request(&self.peer, id, ct, [7u8; 32]))
            }
        }
    }

    /// Reads the peer's reply to the handshake: from now on this session sends plain
    /// ratchet messages (PQXDH §3.3: the initiator repeats the handshake data until it
    /// hears back), as a client's does once its contact has answered.
    pub(crate) fn confirm(&mut self, env: &parley_api::Envelope) -> Result<()> {
        let session = self.session.as_mut().ok_or_else(|| anyhow!("no session to confirm"))?;
        let tf = tag_of(env)?;
        let mut rng = rand::rng();
        let plain = session
            .decrypt_any(&mut rng, env.ciphertext.as_slice(), &parley_proto::ratchet_ad(&tf))
            .map_err(|e| anyhow!("the handshake reply does not decrypt: {e}"))?
            .into_plaintext();
        check_body(&plain, &tf, env, &self.username)
    }
}

fn request(to: &str, id: &str, ciphertext: Vec<u8>, tf: [u8; 32]) -> SendRequest {
    SendRequest {
        recipient: to.to_string(),
        message_id: id.to_string(),
        envelopes: vec![OutgoingEnvelope { device_id: DEVICE_ID, ciphertext: Bytes(ciphertext) }],
        franking_tag: Bytes(tf.to_vec()),
    }
}

/// A message as the client makes it (`Client::franked_for` + `deliver_franked`): the franked
/// body sealed (PROTOCOL.md §12), then encrypted by the ratchet with the commitment TF in the
/// associated data.
fn franked_message(
    session: &mut Session,
    chain: &mut ChainState,
    from: &str,
    to: &str,
    id: &str,
    text: &str,
) -> Result<SendRequest> {
    let mut rng = rand::rng();
    let body = FrankedBody {
        message_id: id.to_string(),
        sent_at_ms: now_ms(),
        sender: from.to_string(),
        sender_device: DEVICE_ID,
        recipient: to.to_string(),
        seq: chain.next_seq(),
        prev: *chain.prev(),
        text: Zeroizing::new(text.to_string()),
    };
    let sealed = parley_proto::seal(&mut rng, &body).map_err(|e| anyhow!("{e}"))?;
    chain.advance(sealed.body_bytes()).map_err(|e| anyhow!("{e}"))?;
    let ad = parley_proto::ratchet_ad(sealed.tf());
    let ct =
        session.encrypt(&mut rng, sealed.content(), &ad).map_err(|e| anyhow!("encrypt: {e}"))?;
    Ok(request(to, id, ct, *sealed.tf()))
}

fn tag_of(env: &parley_api::Envelope) -> Result<[u8; 32]> {
    env.franking_tag.0.as_slice().try_into().map_err(|_| anyhow!("malformed franking tag"))
}

/// Opens the commitment and checks the body against its envelope (`Client::process`).
fn check_body(plain: &[u8], tf: &[u8; 32], env: &parley_api::Envelope, me: &str) -> Result<()> {
    let opened = parley_proto::open(plain, tf).map_err(|e| anyhow!("franking: {e}"))?;
    let b = opened.body();
    if b.message_id != env.message_id
        || b.sender != env.sender
        || b.sender_device != env.sender_device
        || b.recipient != me
    {
        bail!("the franked body does not match its envelope");
    }
    Ok(())
}

/// The receiving half: the device's prekeys (to accept the peer's handshake) and the session.
pub(crate) struct Receiver {
    pub(crate) username: String,
    device: DeviceIdentity,
    cert: DeviceCertificate,
    prekeys: PrekeyStore,
    session: Option<Session>,
}

impl Receiver {
    /// Decrypts and checks one envelope as the client does (`Client::process`): the ratchet
    /// with TF in the associated data, then the commitment, then the body against the
    /// envelope. In plaintext mode only the envelope is looked at.
    pub(crate) fn open(&mut self, env: &parley_api::Envelope, plaintext: bool) -> Result<()> {
        if plaintext {
            return if env.ciphertext.0.is_empty() {
                Err(anyhow!("empty payload"))
            } else {
                Ok(())
            };
        }
        let tf = tag_of(env)?;
        let ad = parley_proto::ratchet_ad(&tf);
        let ct = env.ciphertext.as_slice();
        let mut rng = rand::rng();
        let plain = match (parley_proto::message_kind(ct), &mut self.session) {
            (Ok(MessageKind::Initial { .. }), None) => {
                let a = self
                    .prekeys
                    .accept(&mut rng, now_s(), &self.device, &self.cert, ct, &ad)
                    .map_err(|e| anyhow!("PQXDH accept: {e}"))?;
                let p = a.first.into_plaintext();
                self.session = Some(a.session);
                p
            }
            (Ok(_), Some(s)) => s
                .decrypt_any(&mut rng, ct, &ad)
                .map_err(|e| anyhow!("decrypt: {e}"))?
                .into_plaintext(),
            (Ok(_), None) => bail!("a ratchet message before any session"),
            (Err(e), _) => bail!("malformed message: {e}"),
        };
        check_body(&plain, &tf, env, &self.username)
    }

    /// The answer to the handshake just accepted, on the accepted session, to `to` (the
    /// initiator).
    pub(crate) fn reply(&mut self, to: &str, id: &str) -> Result<SendRequest> {
        let session = self.session.as_mut().ok_or_else(|| anyhow!("no session to reply on"))?;
        franked_message(session, &mut ChainState::new(), &self.username, to, id, "ok")
    }
}

/// Acks `ids` (emptied) with one frame.
pub(crate) async fn send_ack(ws: &mut Ws, ids: &mut Vec<u64>) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let frame = ClientFrame::Ack { ids: std::mem::take(ids) };
    let text = serde_json::to_string(&frame)?;
    ws.send(Message::Text(text.into())).await.context("ack")?;
    Ok(())
}

/// Frames for a device's socket, written in order by its writer task ([`spawn_writer`]).
pub(crate) type Outbox = tokio::sync::mpsc::UnboundedSender<String>;

/// Starts the task that writes a device's frames. Neither the sending nor the receiving half
/// ever waits on the socket itself: the receiving half must keep reading, or a server that
/// stops reading while its answers cannot be written would wait for it forever.
/// At most this many queued frames are written together.
const COALESCE_FRAMES: usize = 64;

pub(crate) fn spawn_writer(mut sink: SplitSink<Ws, Message>) -> Outbox {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        // Every frame queued by now leaves in one write (a bounded number, so that the first
        // is not held back by a long queue).
        'write: while let Some(text) = rx.recv().await {
            let mut next = Some(text);
            let mut n = 0;
            while let Some(text) = next.take() {
                if sink.feed(Message::Text(text.into())).await.is_err() {
                    break 'write;
                }
                n += 1;
                if n < COALESCE_FRAMES {
                    next = rx.try_recv().ok();
                }
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
    });
    tx
}

/// Queues one frame for a device's socket.
pub(crate) fn send_frame(outbox: &Outbox, frame: &ClientFrame) -> Result<()> {
    let text = serde_json::to_string(frame)?;
    outbox.send(text).map_err(|_| anyhow!("the connection's writer stopped"))
}

/// The next server frame; `None` when the connection closed.
pub(crate) async fn next_frame<S>(ws: &mut S) -> Result<Option<ServerFrame>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t).map(Some).context("malformed server frame");
            }
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(anyhow!("WebSocket: {e}")),
        }
    }
}

/// Length of the ciphertext of a `size`-byte message on an established session: computed
/// by sealing and encrypting one on a local session pair, so that `--plaintext` sends
/// exactly as many bytes.
pub(crate) fn ciphertext_len(size: usize) -> Result<usize> {
    let mut rng = rand::rng();
    let a_acc = AccountIdentity::generate(&mut rng);
    let b_acc = AccountIdentity::generate(&mut rng);
    let a = DeviceIdentity::generate(&mut rng);
    let b = DeviceIdentity::generate(&mut rng);
    let a_cert = a_acc.certify(DEVICE_ID, a.public());
    let b_cert = b_acc.certify(DEVICE_ID, b.public());
    let mut b_pre = PrekeyStore::new();
    let spk = b_pre.generate_signed_prekey(&mut rng, now_s(), &b).map_err(|e| anyhow!("{e}"))?;
    let lr = b_pre.generate_last_resort_kem(&mut rng, now_s(), &b).map_err(|e| anyhow!("{e}"))?;
    let bundle = PrekeyBundleIn::from_parts(b_cert.encode(), spk.encode(), lr.encode(), None)
        .validate(Some(b_acc.public()))
        .map_err(|e| anyhow!("{e}"))?;
    let s = parley_proto::initiate(&mut rng, &a, &a_cert, &bundle).map_err(|e| anyhow!("{e}"))?;
    let mut sender = Sender::new("bench_a".into(), "bench_b".into(), "", Some(s), size, 0);
    let first = sender.message("probe-1")?;
    // The responder accepts and replies once; the initiator's next message is then a plain
    // ratchet message, the kind the bench measures.
    let tf: [u8; 32] = first.franking_tag.0.as_slice().try_into().map_err(|_| anyhow!("tf"))?;
    let first_ct = first.envelopes.first().map(|e| e.ciphertext.0.clone()).unwrap_or_default();
    let mut accepted = b_pre
        .accept(&mut rng, now_s(), &b, &b_cert, &first_ct, &parley_proto::ratchet_ad(&tf))
        .map_err(|e| anyhow!("{e}"))?;
    let reply = accepted.session.encrypt(&mut rng, b"r", b"").map_err(|e| anyhow!("{e}"))?;
    let s = sender.session.as_mut().ok_or_else(|| anyhow!("session lost"))?;
    s.decrypt_any(&mut rng, &reply, b"").map_err(|e| anyhow!("{e}"))?;
    let req = sender.message("probe-2")?;
    Ok(req.envelopes.first().map_or(0, |e| e.ciphertext.0.len()))
}
