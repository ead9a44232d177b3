//! `parley bench`: an end-to-end load generator. N simulated devices, each with real keys, a
//! real PQXDH session and a real WebSocket, send to one another in a ring (device i writes to
//! device i+1) and the bench measures what is delivered end to end — send, durable commit,
//! push, decrypt, ack — and the latency from send to decrypt. `--floor` measures, in the same
//! run, SQLite's floor for the same durable work; `--plaintext` runs the same load without
//! encryption; `--idle N` measures a separate server's memory per idle connection.
//! docs/BENCHMARKS.md explains each figure and how to read the ratios.

mod device;
mod load;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use load::{LoadResult, Target};

/// `parley bench` options.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Run against an embedded server (SQLite, durable commits, rate limits lifted): the default
    /// when no --server is given.
    #[arg(long)]
    embedded: bool,
    /// Simulated devices, each with its own session and WebSocket.
    #[arg(long, value_name = "N", default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(2..=10_000))]
    clients: u32,
    /// Seconds of measured load (after the sessions are set up).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Total messages per second, paced evenly over the clients (default: each client sends
    /// its next message as soon as the last one is accepted).
    #[arg(long, value_name = "MSGS_PER_S",
        value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    rate: Option<u64>,
    /// Message text size, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=parley_proto::MAX_FRANKED_TEXT_LEN as u64))]
    size: u64,
    /// Also measure SQLite's floor for the same durable work, in transactions of the mean size
    /// the server's group commit produced (needs the embedded server).
    #[arg(long)]
    floor: bool,
    /// Also run the same load with encryption switched off in the load generator, to read the
    /// cost of end-to-end encryption as a ratio.
    #[arg(long)]
    plaintext: bool,
    /// First open N idle authenticated connections to the --server and report its memory per
    /// connection (from its /metrics).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    idle: Option<u64>,
    /// Sends each client keeps in flight (it encrypts in order and sends without waiting for
    /// the previous answer, up to this many).
    #[arg(long, value_name = "N", default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=256))]
    pipeline: u32,
    /// Send each message with `POST /v1/messages` instead of a `send` frame on the device's
    /// WebSocket (the path of a client that holds no delivery connection).
    #[arg(long)]
    http_sends: bool,
    /// Also write the result (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// What `parley bench` reports (CLI.md, "JSON fields").
#[derive(Debug, Serialize)]
struct BenchReport {
    /// `embedded` or the server URL.
    target: String,
    clients: u32,
    duration_s: u64,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<u64>,
    pipeline: u32,
    /// How the devices send: `websocket` (`send` frames) or `http` (`POST /v1/messages`).
    sends: &'static str,
    /// Messages accepted by the server in the measured window.
    sent: u64,
    /// Messages decrypted by their recipients in the measured window.
    delivered: u64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Failed sends, undecryptable or mismatched messages, broken connections, messages not
    /// delivered by the end of the run.
    errors: u64,
    /// What the first error was, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    /// Mean write operations per transaction of the server's group commit in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_ops_per_commit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_batch: Option<f64>,
    /// delivered_per_s / floor_per_s.
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plaintext_errors: Option<u64>,
    /// The encrypted load run again after the plaintext one (order-balanced comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted_again_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted_again_errors: Option<u64>,
    /// 1 - mean(delivered_per_s, encrypted_again_per_s) / plaintext_per_s: the share of
    /// throughput encryption costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_conns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_bytes_per_conn: Option<f64>,
}

/// Runs the bench; exit code 0 when every message was delivered and nothing failed, 1 otherwise
/// (the figures are printed either way).
pub(crate) async fn run(
    args: BenchArgs,
    server: Option<String>,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<u8> {
    if args.embedded && server.is_some() {
        bail!("--embedded and --server are exclusive: the bench runs against one of them");
    }
    if args.floor && server.is_some() {
        bail!(
            "--floor measures the embedded SQLite store on this machine: use it without --server"
        );
    }
    if args.idle.is_some() && server.as_deref().is_some_and(|s| s.contains(',')) {
        bail!("--idle measures one server process: give --server one URL");
    }
    if args.idle.is_some() && server.is_none() {
        bail!(
            "--idle measures the memory of a separate server process: start one (`parley server`) and pass --server URL"
        );
    }
    let remote = match &server {
        Some(url) => {
            let file = token_file.unwrap_or_else(|| PathBuf::from(crate::DEFAULT_TOKEN_FILE));
            Some((url.trim_end_matches('/').to_string(), crate::read_token(&file)?))
        }
        None => None,
    };
    let size = usize::try_from(args.size).context("--size is too large")?;
    let plain_len = device::ciphertext_len(size)?;
    // A send frame is JSON with the ciphertext in base64; it must fit the server's WebSocket
    // frame limit (64 KiB unless configured otherwise), or the server closes the connection.
    let frame = plain_len.div_ceil(3) * 4 + 512;
    let frame_limit = parley_server::Limits::default().ws_max_message_bytes;
    if !args.http_sends && frame > frame_limit {
        bail!(
            "--size {size} makes send frames of about {frame} bytes, over the WebSocket frame limit \
             of {frame_limit} bytes: add --http-sends to send them with POST /v1/messages"
        );
    }
    let opts = load::Options {
        clients: args.clients as usize,
        duration: Duration::from_secs(args.duration),
        rate: args.rate,
        size,
        plain_len,
        pipeline: args.pipeline as usize,
        progress: !json,
        http_sends: args.http_sends,
    };
    let mut report = BenchReport {
        target: remote.as_ref().map_or_else(|| "embedded".to_string(), |(u, _)| u.clone()),
        clients: args.clients,
        duration_s: args.duration,
        size: args.size,
        rate: args.rate,
        pipeline: args.pipeline,
        sends: if args.http_sends { "http" } else { "websocket" },
        sent: 0,
        delivered: 0,
        delivered_per_s: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        errors: 0,
        first_error: None,
        server_ops_per_commit: None,
        floor_per_s: None,
        floor_batch: None,
        floor_ratio: None,
        plaintext_per_s: None,
        plaintext_p99_ms: None,
        plaintext_errors: None,
        encrypted_again_per_s: None,
        encrypted_again_errors: None,
        encryption_cost: None,
        idle_conns: None,
        idle_bytes_per_conn: None,
    };
    if let (Some(n), Some((url, token))) = (args.idle, &remote) {
        let idle = load::idle(url, token, n, !json).await?;
        report.idle_conns = Some(idle.conns);
        report.idle_bytes_per_conn = Some(idle.bytes_per_conn);
    }
    let main = one_load(&remote, &opts, false).await?;
    fill_main(&mut report, &main);
    if args.plaintext {
        // Encrypted, plaintext, encrypted again: each load on a fresh server, and the
        // plaintext one compared with the mean of the two around it, so that whatever drifts
        // from one run to the next in this process (allocator, page cache, a neighbour on the
        // machine) weighs on both sides alike instead of favouring the second run.
        let plain = one_load(&remote, &opts, true).await?;
        let again = one_load(&remote, &opts, false).await?;
        report.plaintext_per_s = Some(plain.delivered_per_s());
        report.plaintext_p99_ms = Some(plain.quantile_ms(0.99));
        report.plaintext_errors = Some(plain.errors);
        report.encrypted_again_per_s = Some(again.delivered_per_s());
        report.encrypted_again_errors = Some(again.errors);
        let p = plain.delivered_per_s();
        let encrypted = (report.delivered_per_s + again.delivered_per_s()) / 2.0;
        report.encryption_cost = (p > 0.0).then(|| 1.0 - encrypted / p);
    }
    if args.floor {
        let batch = main.ops_per_commit.unwrap_or(1.0).max(1.0);
        let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
        let floor = parley_server::store::sqlite::floor::storage_floor(
            &dir.path().join("floor.db"),
            parley_server::store::sqlite::floor::FloorSpec {
                devices: args.clients as usize,
                ops_per_commit: batch,
                messages_per_ack: main.messages_per_ack(),
                ciphertext_len: plain_len,
                duration: Duration::from_secs(args.duration),
                max_messages: u64::MAX,
            },
        )
        .await
        .context("the storage floor run failed")?;
        let f = floor.messages_per_sec();
        report.floor_per_s = Some(f);
        report.floor_batch = Some(floor.ops_per_commit());
        report.floor_ratio = (f > 0.0).then(|| report.delivered_per_s / f);
    }
    let text = serde_json::to_string(&report)?;
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        println!("{text}");
    } else {
        print_table(&report);
    }
    let failed = report.errors > 0
        || report.plaintext_errors.is_some_and(|e| e > 0)
        || report.encrypted_again_errors.is_some_and(|e| e > 0);
    Ok(u8::from(failed))
}

/// One load on a fresh target (for the embedded default, a new server and folder).
async fn one_load(
    remote: &Option<(String, String)>,
    opts: &load::Options,
    plaintext: bool,
) -> Result<LoadResult> {
    let target = Target::new(remote.clone()).await?;
    let r = load::run(&target, opts, plaintext).await;
    target.close().await?;
    r
}

fn fill_main(report: &mut BenchReport, main: &LoadResult) {
    report.sent = main.sent;
    report.delivered = main.delivered_in_window;
    report.delivered_per_s = main.delivered_per_s();
    report.p50_ms = main.quantile_ms(0.50);
    report.p99_ms = main.quantile_ms(0.99);
    report.p999_ms = main.quantile_ms(0.999);
    report.errors = main.errors;
    report.first_error.clone_from(&main.first_error);
    report.server_ops_per_commit = main.ops_per_commit;
}

fn print_table(r: &BenchReport) {
    println!(
        "parley bench: {} — {} clients, {}-byte messages, {} s{}",
        r.target,
        r.clients,
        r.size,
        r.duration_s,
        r.rate.map(|x| format!(", paced at {x} msg/s")).unwrap_or_default()
    );
    println!(
        "{:<28} {:>14} {:>9} {:>9} {:>9} {:>7}",
        "", "delivered/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"
    );
    println!(
        "{:<28} {:>14.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
        "end-to-end encrypted", r.delivered_per_s, r.p50_ms, r.p99_ms, r.p999_ms, r.errors
    );
    if let (Some(p), Some(p99), Some(e)) =
        (r.plaintext_per_s, r.plaintext_p99_ms, r.plaintext_errors)
    {
        println!(
            "{:<28} {:>14.0} {:>9} {:>9.2} {:>9} {:>7}",
            "same load, plaintext", p, "", p99, "", e
        );
    }
    if let (Some(a), Some(e)) = (r.encrypted_again_per_s, r.encrypted_again_errors) {
        println!("{:<28} {:>14.0} {:>9} {:>9} {:>9} {:>7}", "encrypted again", a, "", "", "", e);
    }
    if let (Some(f), Some(b)) = (r.floor_per_s, r.floor_batch) {
        println!(
            "{:<28} {:>14.0}   (SQLite alone, {b:.1} operations per commit)",
            "storage floor", f
        );
    }
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
    if let Some(x) = r.floor_ratio {
        println!("server / storage floor: {:.0} %", x * 100.0);
    }
    if let Some(c) = r.encryption_cost {
        println!("cost of encryption: {:.1} % of throughput", c * 100.0);
    }
    if let Some(g) = r.server_ops_per_commit {
        println!("server group commit: {g:.1} operations per commit");
    }
    if let (Some(n), Some(b)) = (r.idle_conns, r.idle_bytes_per_conn) {
        println!("idle connections: {n}, server memory {:.1} KiB per connection", b / 1024.0);
    }
}
