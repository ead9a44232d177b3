//! The load itself: provisioning, sessions, the measured window, and the idle-connection
//! measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use futures_util::stream;
use futures_util::stream::SplitStream;
use hdrhistogram::Histogram;
use parley_api::{ClientFrame, ServerFrame};
use tokio::sync::{Semaphore, watch};

use super::device::{self, Device, Outbox, Receiver, Sender, Ws};

/// Concurrency of provisioning and connection set-up.
const SETUP_CONCURRENCY: usize = 32;
/// Ack when this many envelopes are waiting (half the server's default push window).
const ACK_EVERY: usize = 64;
/// The load that runs before the measured window, at the same rate, and is not measured: the
/// window measures a steady state, not the first instants after the warm-up, when every client
/// starts at once and every answer the server caches has expired (docs/BENCHMARKS.md, part 2,
/// S13).
const LEAD_IN: Duration = Duration::from_secs(1);
/// How long the bench waits, after the window, for messages still in flight.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// How the load runs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) clients: usize,
    pub(crate) duration: Duration,
    pub(crate) rate: Option<u64>,
    pub(crate) size: usize,
    pub(crate) plain_len: usize,
    pub(crate) pipeline: usize,
    pub(crate) progress: bool,
    /// Send with `POST /v1/messages` instead of `send` frames on the device's WebSocket.
    pub(crate) http_sends: bool,
}

/// Where the load goes: an embedded server started for this run, or a given one.
pub(crate) struct Target {
    /// The nodes; device i uses node i mod len (so with two nodes every message crosses
    /// from one node to the other).
    urls: Vec<String>,
    admin_token: String,
    embedded: Option<(parley_server::RunningServer, tempfile::TempDir)>,
}

impl Target {
    /// `remote` is (URL[,URL...], admin token); without it an embedded server is started: SQLite in a
    /// temporary folder, durable commits as always, rate limits lifted
    /// (`Limits::load_test`).
    pub(crate) async fn new(remote: Option<(String, String)>) -> Result<Self> {
        if let Some((list, admin_token)) = remote {
            let urls: Vec<String> =
                list.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).collect();
            if urls.iter().any(String::is_empty) {
                bail!("--server takes URL or URL,URL,... (the nodes of one cluster)");
            }
            return Ok(Self { urls, admin_token, embedded: None });
        }
        let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
        let config = parley_server::Config {
            data_dir: dir.path().join("server"),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: parley_server::Limits::load_test(),
            ..parley_server::Config::default()
        };
        let server =
            parley_server::start(config).await.context("cannot start the embedded server")?;
        let admin_token = std::fs::read_to_string(&server.admin_token_path)
            .context("cannot read the embedded server's admin token")?
            .trim()
            .to_string();
        Ok(Self { urls: vec![server.url()], admin_token, embedded: Some((server, dir)) })
    }

    /// The node of device `i`.
    fn node(&self, i: usize) -> &str {
        let k = self.urls.len().max(1);
        self.urls.get(i % k).map_or("", String::as_str)
    }

    /// Stops the embedded server (and removes its folder).
    pub(crate) async fn close(self) -> Result<()> {
        if let Some((server, dir)) = self.embedded {
            server.shutdown().await.context("the embedded server did not stop cleanly")?;
            drop(dir);
        }
        Ok(())
    }
}

/// What one load run measured.
#[derive(Debug)]
pub(crate) struct LoadResult {
    pub(crate) sent: u64,
    pub(crate) delivered_in_window: u64,
    pub(crate) errors: u64,
    window: Duration,
    latency_us: Histogram<u64>,
    pub(crate) ops_per_commit: Option<f64>,
    acked: u64,
    ack_ops: u64,
    /// Why the first error happened.
    pub(crate) first_error: Option<String>,
}

impl LoadResult {
    pub(crate) fn delivered_per_s(&self) -> f64 {
        let s = self.window.as_secs_f64();
        if s > 0.0 { self.delivered_in_window as f64 / s } else { 0.0 }
    }

    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Messages acknowledged per ack frame (the server runs one write per ack frame).
    pub(crate) fn messages_per_ack(&self) -> f64 {
        if self.ack_ops == 0 { 1.0 } else { self.acked as f64 / self.ack_ops as f64 }
    }
}

/// Counters shared by the tasks of one run. Times are microseconds since `origin`.
#[derive(Default)]
struct Shared {
    window_start: AtomicU64,
    window_end: AtomicU64,
    sent: AtomicU64,
    delivered_total: AtomicU64,
    delivered_window: AtomicU64,
    errors: AtomicU64,
    acked: AtomicU64,
    ack_ops: AtomicU64,
    /// Why the first error happened (reported with the count).
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// Counts an error; the first one's reason is kept.
    fn fail(&self, why: impl FnOnce() -> String) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0
            && let Ok(mut first) = self.first_error.lock()
        {
            first.get_or_insert_with(why);
        }
    }
}

fn micros(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Measured messages carry their send time in their id: `{micros:012x}-{seq}` (fixed width:
/// ids made later sort later, as a client's do); warm-up
/// messages are `w-{i}` and `r-{i}`.
fn sent_at(message_id: &str) -> Option<u64> {
    let (t, _) = message_id.split_once('-')?;
    u64::from_str_radix(t, 16).ok()
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// Provisions `n` devices named `{prefix}{i}`.
async fn provision(
    http: &reqwest::Client,
    url: &str,
    admin_token: &str,
    prefix: &str,
    n: usize,
) -> Result<Vec<Device>> {
    let results: Vec<Result<(usize, Device)>> = stream::iter(0..n)
        .map(|i| async move {
            Device::provision(http, url, admin_token, format!("{prefix}{i}")).await.map(|d| (i, d))
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let mut devices: Vec<(usize, Device)> = results.into_iter().collect::<Result<_>>()?;
    devices.sort_by_key(|(i, _)| *i);
    Ok(devices.into_iter().map(|(_, d)| d).collect())
}

/// Opens a WebSocket per token (token i to node i mod len) and waits for its `drained` frame.
async fn connect_all(urls: &[String], tokens: &[String]) -> Result<Vec<Ws>> {
    let k = urls.len().max(1);
    let results: Vec<Result<(usize, Ws)>> = stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| async move {
            let url = urls.get(i % k).map_or("", String::as_str);
            let mut ws = device::connect_ws(url, token).await?;
            loop {
                match device::next_frame(&mut ws).await? {
                    Some(ServerFrame::Drained) => return Ok((i, ws)),
                    Some(
                        ServerFrame::Envelope(_)
                        | ServerFrame::Sent(_)
                        | ServerFrame::SendFailed(_),
                    ) => {}
                    Some(ServerFrame::Error(e)) => {
                        bail!("the server closed a connection: {}", e.message)
                    }
                    None => bail!("the server closed a connection during set-up"),
                }
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let mut all: Vec<(usize, Ws)> = results.into_iter().collect::<Result<_>>()?;
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, w)| w).collect())
}

fn run_id() -> String {
    use rand::RngExt;
    let n: u32 = rand::rng().random();
    format!("{n:08x}")
}

/// Reads a counter or gauge from the server's /metrics.
async fn metric(http: &reqwest::Client, url: &str, name: &str) -> Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .context("cannot read the server's /metrics")?
        .text()
        .await
        .context("cannot read the server's /metrics")?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            if k == name { v.trim().parse::<f64>().ok() } else { None }
        })
        .ok_or_else(|| anyhow!("the server's /metrics has no {name}"))
}

/// Commits and committed operations, summed over the nodes.
async fn commit_counters(http: &reqwest::Client, urls: &[String]) -> Option<(f64, f64)> {
    let (mut c, mut o) = (0.0, 0.0);
    for url in urls {
        c += metric(http, url, "parley_commits_total").await.ok()?;
        o += metric(http, url, "parley_committed_operations_total").await.ok()?;
    }
    Some((c, o))
}

fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// The next envelope on a socket during set-up (bounded wait).
async fn next_envelope(ws: &mut Ws) -> Result<parley_api::Envelope> {
    let wait = Duration::from_secs(60);
    loop {
        match tokio::time::timeout(wait, device::next_frame(ws)).await {
            Err(_) => bail!("a warm-up message did not arrive within {} s", wait.as_secs()),
            Ok(Ok(Some(ServerFrame::Envelope(env)))) => {
                device::send_ack(ws, &mut vec![env.id]).await?;
                return Ok(env);
            }
            Ok(Ok(Some(
                ServerFrame::Drained | ServerFrame::Sent(_) | ServerFrame::SendFailed(_),
            ))) => {}
            Ok(Ok(Some(ServerFrame::Error(e)))) => {
                bail!("the server closed a connection: {}", e.message)
            }
            Ok(Ok(None)) => bail!("the server closed a connection during the warm-up"),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Warm-up, outside the measured window: every device sends its first message (the PQXDH
/// initial message when encrypted); every recipient accepts it and answers on the new
/// session; every initiator reads the answer. After it, messages are steady-state ratchet
/// messages, as between two clients who have written to each other.
async fn warm_up(
    http: &reqwest::Client,
    target: &Target,
    tokens: &[String],
    senders: &mut [Sender],
    receivers: &mut [Receiver],
    sockets: &mut [Ws],
    plaintext: bool,
) -> Result<()> {
    let n = senders.len();
    for (i, s) in senders.iter_mut().enumerate() {
        let req = s.message(&format!("w-{i}"))?;
        post(http, target.node(i), &s.token, &req).await.context("warm-up send")?;
    }
    for (j, (rx, ws)) in receivers.iter_mut().zip(sockets.iter_mut()).enumerate() {
        let env = next_envelope(ws).await?;
        rx.open(&env, plaintext).context("warm-up message")?;
        if !plaintext {
            let prev = senders.get((j + n - 1) % n).map(|s| s.username.clone()).unwrap_or_default();
            let req = rx.reply(&prev, &format!("r-{j}"))?;
            let token = tokens.get(j).ok_or_else(|| anyhow!("token {j}"))?;
            post(http, target.node(j), token, &req).await.context("warm-up reply")?;
        }
    }
    if !plaintext {
        for (s, ws) in senders.iter_mut().zip(sockets.iter_mut()) {
            let env = next_envelope(ws).await?;
            s.confirm(&env)?;
        }
    }
    Ok(())
}

/// One load run.
pub(crate) async fn run(target: &Target, opts: &Options, plaintext: bool) -> Result<LoadResult> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(opts.clients * opts.pipeline)
        .build()
        .context("HTTP client")?;
    let n = opts.clients;
    let what = if plaintext { "plaintext" } else { "encrypted" };
    let devices =
        provision(&http, target.node(0), &target.admin_token, &format!("bench_{}_", run_id()), n)
            .await?;
    let tokens: Vec<String> = devices.iter().map(|d| d.token().to_string()).collect();
    let sockets = connect_all(&target.urls, &tokens).await?;
    // Sessions: device i writes to device i+1.
    let mut senders = Vec::with_capacity(n);
    for (i, d) in devices.iter().enumerate() {
        let peer = devices.get((i + 1) % n).map(|p| p.username.clone()).unwrap_or_default();
        let session = if plaintext {
            None
        } else {
            Some(d.start_session(&http, target.node(i), &peer).await?)
        };
        senders.push(Sender::new(
            d.username.clone(),
            peer,
            d.token(),
            session,
            opts.size,
            opts.plain_len,
        ));
    }
    let mut receivers: Vec<Receiver> = devices.into_iter().map(Device::into_receiver).collect();
    let mut sockets = sockets;
    warm_up(&http, target, &tokens, &mut senders, &mut receivers, &mut sockets, plaintext).await?;

    let origin = Instant::now();
    let shared = Arc::new(Shared::default());
    shared.window_start.store(u64::MAX, Ordering::Relaxed);
    shared.window_end.store(u64::MAX, Ordering::Relaxed);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each device's socket is shared by its sending half (send frames) and its receiving
    // half (acks); the receiving half also reads the answers to the sends and frees their
    // pipeline slots.
    let mut receiving = Vec::with_capacity(n);
    let mut transports = Vec::with_capacity(n);
    for (i, (rx, ws)) in receivers.into_iter().zip(sockets).enumerate() {
        let (sink, stream) = ws.split();
        let sink = device::spawn_writer(sink);
        let slots = Arc::new(Semaphore::new(opts.pipeline));
        transports.push(if opts.http_sends {
            Transport::Http { http: http.clone(), url: target.node(i).to_string() }
        } else {
            Transport::Ws { sink: sink.clone(), slots: slots.clone() }
        });
        let io = ReceiverIo { sink, stream, slots };
        let shared = shared.clone();
        let stop = stop_rx.clone();
        let hist = new_histogram()?;
        receiving.push(tokio::spawn(receive_loop(hist, rx, io, plaintext, origin, shared, stop)));
    }

    // The load starts now; the measured window after LEAD_IN of it.
    let start = micros(origin) + u64::try_from(LEAD_IN.as_micros()).unwrap_or(0);
    let end = start + u64::try_from(opts.duration.as_micros()).unwrap_or(u64::MAX);
    shared.window_start.store(start, Ordering::Relaxed);
    shared.window_end.store(end, Ordering::Relaxed);
    let interval = opts.rate.map(|r| Duration::from_secs_f64(n as f64 / r as f64));
    let mut sending = Vec::with_capacity(n);
    for (i, (s, transport)) in senders.into_iter().zip(transports).enumerate() {
        let offset = interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / n as f64));
        let pacing = Pacing { origin, end, interval, offset };
        sending.push(tokio::spawn(send_loop(s, transport, pacing, shared.clone(), opts.pipeline)));
    }
    tokio::time::sleep(LEAD_IN).await;
    let before = commit_counters(&http, &target.urls).await;
    let bar = progress_bar(opts.progress, opts.duration.as_secs(), what);
    while micros(origin) < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let elapsed = micros(origin).saturating_sub(start) / 1_000_000;
        bar.set_position(elapsed.min(opts.duration.as_secs()));
        bar.set_message(format!("{} delivered", shared.delivered_window.load(Ordering::Relaxed)));
    }
    for t in sending {
        t.await.map_err(|e| anyhow!("a sender failed: {e}"))?;
    }
    let after = commit_counters(&http, &target.urls).await;
    bar.finish_and_clear();
    // Let what is in flight arrive, so that latencies are complete.
    let grace = Instant::now() + DRAIN_GRACE;
    while shared.delivered_total.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed)
        && Instant::now() < grace
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut latency_us = new_histogram()?;
    for t in receiving {
        let h = t.await.map_err(|e| anyhow!("a receiver failed: {e}"))?;
        latency_us.add(h).map_err(|e| anyhow!("histogram: {e}"))?;
    }
    let sent = shared.sent.load(Ordering::Relaxed);
    let lost = sent.saturating_sub(shared.delivered_total.load(Ordering::Relaxed));
    let ops_per_commit = match (before, after) {
        (Some((c0, o0)), Some((c1, o1))) if c1 > c0 => Some((o1 - o0) / (c1 - c0)),
        _ => None,
    };
    Ok(LoadResult {
        sent,
        delivered_in_window: shared.delivered_window.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed) + lost,
        window: opts.duration,
        latency_us,
        ops_per_commit,
        acked: shared.acked.load(Ordering::Relaxed),
        ack_ops: shared.ack_ops.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().ok().and_then(|mut f| f.take()).or_else(|| {
            (lost > 0).then(|| format!("{lost} accepted messages were not delivered in time"))
        }),
    })
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    req: &parley_api::SendRequest,
) -> Result<()> {
    let resp = http
        .post(format!("{url}/v1/messages"))
        .bearer_auth(token)
        .json(req)
        .send()
        .await
        .context("send")?;
    let status = resp.status();
    // Read the body so the connection is reused.
    let _ = resp.bytes().await;
    if status.is_success() { Ok(()) } else { Err(anyhow!("the server answered {status}")) }
}

/// How a sender's messages reach the server.
enum Transport {
    /// `send` frames on the device's WebSocket; `slots` holds a permit per send that may
    /// still be put in flight (the receiving half returns one per answer).
    Ws { sink: Outbox, slots: Arc<Semaphore> },
    /// `POST /v1/messages` on a pooled HTTP connection.
    Http { http: reqwest::Client, url: String },
}

/// When a sender sends: until `end` (micros since `origin`), every `interval` from `offset`
/// when paced, else as fast as the pipeline allows.
#[derive(Clone, Copy)]
struct Pacing {
    origin: Instant,
    end: u64,
    interval: Option<Duration>,
    offset: Duration,
}

async fn send_loop(
    mut s: Sender,
    transport: Transport,
    pacing: Pacing,
    shared: Arc<Shared>,
    pipeline: usize,
) {
    let Pacing { origin, end, interval, offset } = pacing;
    let mut next = tokio::time::Instant::now() + offset;
    let deadline =
        tokio::time::Instant::now() + Duration::from_micros(end.saturating_sub(micros(origin)));
    let mut seq = 0u64;
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    let count = |r: Result<()>| match r {
        Ok(()) => {
            shared.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => shared.fail(|| format!("send: {e:#}")),
    };
    loop {
        // Keep at most `pipeline` sends in flight; when paced, wait for the next slot while
        // the answers come in.
        while inflight.len() >= pipeline {
            if let Some(r) = inflight.next().await {
                count(r);
            }
        }
        if let Some(iv) = interval {
            // A slot after the window is never waited for (a low --rate over many clients).
            if next >= deadline {
                break;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    Some(r) = inflight.next(), if !inflight.is_empty() => count(r),
                }
            }
            next += iv;
        }
        if let Transport::Ws { slots, .. } = &transport {
            match slots.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
        }
        let now = micros(origin);
        if now >= end {
            if let Transport::Ws { slots, .. } = &transport {
                slots.add_permits(1);
            }
            break;
        }
        let id = format!("{now:012x}-{seq}");
        seq += 1;
        // Encryption happens here, in order; the sends may overlap (the ratchet keeps the
        // keys of messages that arrive out of order).
        let req = match s.message(&id) {
            Ok(req) => req,
            Err(e) => {
                count(Err(e.context("encrypt")));
                if let Transport::Ws { slots, .. } = &transport {
                    slots.add_permits(1);
                }
                continue;
            }
        };
        match &transport {
            Transport::Http { http, url } => {
                let (http, url, token) = (http.clone(), url.clone(), s.token.clone());
                inflight.push(async move { post(&http, &url, &token, &req).await });
            }
            Transport::Ws { sink, slots } => {
                if let Err(e) = device::send_frame(sink, &ClientFrame::Send { request: req }) {
                    count(Err(e));
                    slots.add_permits(1);
                }
            }
        }
    }
    while let Some(r) = inflight.next().await {
        count(r);
    }
    // Over the WebSocket the answers arrive on the receiving half: wait until every slot is
    // back (bounded; what never comes back is counted as undelivered by the caller).
    if let Transport::Ws { slots, .. } = &transport {
        let all = u32::try_from(pipeline).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(DRAIN_GRACE, slots.acquire_many(all)).await;
    }
}

/// A receiving half: the device's socket and the slots of its sending half.
struct ReceiverIo {
    sink: Outbox,
    stream: SplitStream<Ws>,
    slots: Arc<Semaphore>,
}

async fn receive_loop(
    mut hist: Histogram<u64>,
    mut rx: Receiver,
    mut io: ReceiverIo,
    plaintext: bool,
    origin: Instant,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Histogram<u64> {
    let mut pending: Vec<u64> = Vec::with_capacity(ACK_EVERY);
    loop {
        let frame = tokio::select! {
            f = device::next_frame(&mut io.stream) => f,
            _ = stop.changed() => break,
        };
        match frame {
            Ok(Some(ServerFrame::Envelope(env))) => {
                let now = micros(origin);
                match rx.open(&env, plaintext) {
                    Ok(()) => {
                        if let Some(t) = sent_at(&env.message_id) {
                            shared.delivered_total.fetch_add(1, Ordering::Relaxed);
                            let (start, end) = (
                                shared.window_start.load(Ordering::Relaxed),
                                shared.window_end.load(Ordering::Relaxed),
                            );
                            if now >= start && now < end {
                                shared.delivered_window.fetch_add(1, Ordering::Relaxed);
                            }
                            // Latency of the messages sent in the window (not the lead-in).
                            if t >= start && t < end {
                                let _ = hist.record(now.saturating_sub(t).max(1));
                            }
                        }
                    }
                    Err(e) => shared.fail(|| format!("receive: {e:#}")),
                }
                pending.push(env.id);
                if pending.len() >= ACK_EVERY && !ack(&io.sink, &mut pending, &shared) {
                    break;
                }
            }
            Ok(Some(ServerFrame::Drained)) => {
                if !ack(&io.sink, &mut pending, &shared) {
                    break;
                }
            }
            // The answers to this device's own sends.
            Ok(Some(ServerFrame::Sent(_))) => {
                shared.sent.fetch_add(1, Ordering::Relaxed);
                io.slots.add_permits(1);
            }
            Ok(Some(ServerFrame::SendFailed(f))) => {
                shared.fail(|| format!("send refused: {} ({}): {}", f.error, f.status, f.message));
                io.slots.add_permits(1);
            }
            Ok(Some(ServerFrame::Error(e))) => {
                if !*stop.borrow() {
                    shared.fail(|| format!("the server closed a connection: {}", e.message));
                }
                break;
            }
            Ok(None) => {
                if !*stop.borrow() {
                    shared.fail(|| "the server closed a connection".into());
                }
                break;
            }
            Err(e) => {
                if !*stop.borrow() {
                    shared.fail(|| format!("connection: {e:#}"));
                }
                break;
            }
        }
    }
    // Nothing more will come back: a sender waiting for its slots stops waiting.
    io.slots.close();
    hist
}

/// Acks what is pending; false when the connection is gone.
fn ack(sink: &Outbox, pending: &mut Vec<u64>, shared: &Shared) -> bool {
    if pending.is_empty() {
        return true;
    }
    let n = pending.len() as u64;
    let frame = ClientFrame::Ack { ids: std::mem::take(pending) };
    if let Err(e) = device::send_frame(sink, &frame) {
        shared.fail(|| format!("ack: {e:#}"));
        return false;
    }
    shared.acked.fetch_add(n, Ordering::Relaxed);
    shared.ack_ops.fetch_add(1, Ordering::Relaxed);
    true
}

/// What `--idle` measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Idle {
    pub(crate) conns: u64,
    pub(crate) bytes_per_conn: f64,
}

/// Opens `n` idle authenticated WebSockets to the server at `url` and reads its resident
/// memory (`parley_process_resident_bytes` on /metrics) before and after: the difference per
/// connection. The server must be a separate process; accounts are created through the admin
/// API with a minimal prekey set.
pub(crate) async fn idle(url: &str, admin_token: &str, n: u64, progress: bool) -> Result<Idle> {
    let count = usize::try_from(n).context("--idle is too large")?;
    raise_open_files(n)?;
    let http = reqwest::Client::builder().build().context("HTTP client")?;
    let bar = progress_bar(progress, n, "idle: accounts");
    let prefix = format!("idle_{}_", run_id());
    let mut tokens = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(1000) {
        let len = (count - chunk_start).min(1000);
        let devices =
            provision(&http, url, admin_token, &format!("{prefix}{chunk_start}_"), len).await?;
        tokens.extend(devices.iter().map(|d| d.token().to_string()));
        bar.inc(len as u64);
    }
    bar.finish_and_clear();
    // The key directory takes new accounts in at its next epoch; that work, and the memory the
    // directory keeps for them, are per account, not per connection. Publishing the epoch now
    // keeps it out of the window (a timed epoch falling between the two readings counted
    // ~14 KB per connection: docs/BENCHMARKS.md, part 2, S16).
    publish_kt(&http, url, admin_token).await?;
    // Let the allocator settle after provisioning, then read the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = metric(&http, url, "parley_process_resident_bytes").await?;
    let bar = progress_bar(progress, n, "idle: connections");
    let mut sockets = Vec::with_capacity(count);
    for chunk in tokens.chunks(1000) {
        sockets.extend(connect_all(&[url.to_string()], chunk).await?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let connected = metric(&http, url, "parley_ws_connected_devices").await?;
    let after = metric(&http, url, "parley_process_resident_bytes").await?;
    drop(sockets);
    if connected < n as f64 {
        bail!("the server reports {connected} connected devices, fewer than the {n} opened");
    }
    Ok(Idle { conns: n, bytes_per_conn: (after - before).max(0.0) / n as f64 })
}

/// Publishes a key-transparency epoch now (`POST /v1/admin/kt/publish`).
async fn publish_kt(http: &reqwest::Client, url: &str, admin_token: &str) -> Result<()> {
    let resp = http
        .post(format!("{url}/v1/admin/kt/publish"))
        .bearer_auth(admin_token)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {url}"))?;
    // 409: another node of its cluster publishes the epochs; that node's memory is not measured.
    if !resp.status().is_success() && resp.status() != reqwest::StatusCode::CONFLICT {
        let status = resp.status();
        let body: Option<parley_api::ErrorBody> = resp.json().await.ok();
        bail!(
            "the server did not publish a key-transparency epoch: {} ({status})",
            body.map(|b| b.message).unwrap_or_default()
        );
    }
    Ok(())
}

/// Raises this process's soft limit on open files to what `n` connections need (up to the hard
/// limit), or says why it cannot.
fn raise_open_files(n: u64) -> Result<()> {
    let need = n.saturating_add(256);
    let (soft, hard) = rlimit::Resource::NOFILE.get().context("cannot read the open-file limit")?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        bail!(
            "--idle {n} needs {need} open files but the hard limit is {hard} (raise it: ulimit -Hn)"
        );
    }
    rlimit::Resource::NOFILE.set(need, hard).context("cannot raise the open-file limit")?;
    Ok(())
}
