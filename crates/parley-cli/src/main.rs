//! `parley`: one binary for the server, the client and the operator. The contract (global
//! options, exit codes, JSON fields) is CLI.md; commands arrive with the features they drive.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

mod bench;
mod client_cmds;
mod demo;
mod kt_cmds;
mod moderation;
mod safety_cmds;
mod time;
mod ui;

/// Exit code for a usage error (clap uses it too).
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "parley",
    version,
    about = "End-to-end encrypted messaging: server, client and admin commands."
)]
struct Cli {
    /// Machine output on stdout: one JSON object (per line for lists and streams).
    #[arg(long, global = true)]
    json: bool,
    /// The server URL for admin commands (default http://127.0.0.1:7470); for client commands
    /// it overrides the account's stored server for this one command (another node, a load
    /// balancer).
    #[arg(long, global = true, env = "PARLEY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Admin commands: file holding the admin token (the server writes DATA/admin.token).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The client's state folder (default ~/.parley).
    #[arg(long, global = true, env = "PARLEY_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// File holding the local store's passphrase (else PARLEY_PASSPHRASE, else a prompt).
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// An extra CA certificate (PEM) to trust for https:// servers.
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Allow plain http:// to a server that is not on loopback (unsafe).
    #[arg(long, global = true)]
    insecure_http: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (SQLite in the data folder; loopback by default).
    Server(ServerArgs),
    /// Operator commands over the admin API (admin token required).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// A self-contained tour: embedded server, two accounts, a conversation, what the server sees.
    Demo,
    /// Load generator: real end-to-end encrypted devices over real WebSockets; messages per
    /// second delivered and latency from send to decrypt (embedded server by default; with
    /// --server URL[,URL...], device i uses node i mod the number of URLs).
    Bench(bench::BenchArgs),
    /// Create, show or delete your account.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Send a message; prints its id (exit 3 when queued because the server is unreachable).
    Send {
        /// The recipient's username.
        name: String,
        /// The message text (or --stdin).
        text: Option<String>,
        /// Read the message from standard input.
        #[arg(long)]
        stdin: bool,
    },
    /// Fetch, store and acknowledge everything waiting; print new messages from contacts.
    Receive {
        /// Wait up to SECONDS for the first message, then drain what is there.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
        /// Also print message requests (from people who are not contacts yet).
        #[arg(long)]
        all: bool,
        /// Print the text of messages hidden by your filters.
        #[arg(long)]
        reveal: bool,
    },
    /// The conversation with NAME.
    History {
        /// The contact.
        name: String,
        /// Print the text of messages hidden by your filters.
        #[arg(long)]
        reveal: bool,
    },
    /// Message requests: people who wrote to you and are not contacts yet.
    Requests,
    /// Accept NAME's message request (sending to NAME accepts it too).
    Accept {
        /// The requester.
        name: String,
    },
    /// Decline NAME's message request: their messages are deleted here; they are not told.
    Decline {
        /// The requester.
        name: String,
    },
    /// Block NAME: the server stops delivering their messages to you.
    Block {
        /// The account to block.
        name: String,
        /// First report NAME's last message (with context) to the server's moderators.
        #[arg(long)]
        report: bool,
    },
    /// Report a message you received to the server's moderators, with verifiable context.
    Report {
        /// The message id (from `receive` or `history`).
        message_id: String,
        /// How many earlier messages of the conversation to include (default 10, at most 50).
        #[arg(long, value_name = "N")]
        context: Option<usize>,
        /// Why you report it.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Also block the sender.
        #[arg(long)]
        block: bool,
    },
    /// Unblock NAME.
    Unblock {
        /// The account to unblock.
        name: String,
    },
    /// On-device filters: phrases, regular expressions and link warnings (default: show).
    Filters {
        #[command(subcommand)]
        command: Option<safety_cmds::FiltersCommand>,
    },
    /// Your contacts.
    Contacts,
    /// The safety number with NAME (compare it in person).
    Verify {
        /// The contact.
        name: String,
        /// After a key-change warning and comparing the new safety number: trust NAME's new key.
        #[arg(long)]
        accept_new_key: bool,
    },
    /// Interactive: type a line to send it; incoming messages appear as they arrive.
    Chat {
        /// The contact.
        name: String,
    },
    /// The local web UI: a chat app in the browser, served on 127.0.0.1 by this process (keys
    /// and crypto stay here). Prints a one-time link.
    Ui {
        /// The port (default: a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Open the link in the desktop's browser.
        #[arg(long)]
        open: bool,
    },
    /// Key-transparency audit: check the directory's signed log and roots clients observed.
    ///
    /// Verifies every append-only proof since the last audited epoch and every signature, then
    /// checks the (epoch, root) pairs clients observed (from `parley verify --json`).
    Audit {
        /// Where the audited roots are kept between runs (created if missing).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// JSON from `parley verify --json` (one object per line) to check against the log.
        #[arg(long, value_name = "FILE", num_args = 1..)]
        observed: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Generate keys locally and register the account.
    Create {
        /// The username: 3-32 characters, a lowercase letter first, then a-z, 0-9, '_', '.', '-'.
        #[arg(long)]
        username: String,
        /// The account belongs to a minor: adults cannot start conversations with it, and
        /// on-device filters are on by default. Only the server's admin can change it later.
        #[arg(long)]
        minor: bool,
    },
    /// Show the account.
    Info,
    /// Delete the account on the server (queues, prekeys) and wipe the local store.
    Delete {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Data folder (database, admin token).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Store in PostgreSQL (postgres://USER@HOST/DB) instead of SQLite in the data folder.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Listen address; anything but loopback requires --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// TOML configuration file (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// PEM certificate chain (enables HTTPS).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Cluster mode: NATS servers for cross-node wake-ups (needs --database and a master key).
    #[arg(long, value_name = "nats://HOST:PORT[,...]")]
    nats: Option<String>,
    /// Master key file (32 bytes, base64; else env PARLEY_MASTER_KEY): key material is then
    /// kept in the database, sealed, and shared by every node.
    #[arg(long, value_name = "FILE")]
    master_key_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Seconds between key-transparency epochs (default 10): changes are published together.
    #[arg(long, value_name = "SECS")]
    kt_epoch_interval: Option<u64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Store-wide counts: accounts, devices, queued envelopes, connections, commit groups.
    Stats,
    /// Account administration.
    Account {
        #[command(subcommand)]
        command: AdminAccountCommand,
    },
    /// Open abuse reports (the moderation queue).
    Reports,
    /// One report: show it with its verification, or resolve it.
    Report {
        #[command(subcommand)]
        command: AdminReportCommand,
    },
    /// Start a new franking key; the previous one keeps verifying for the grace period.
    RotateFrankingKey,
    /// Key transparency.
    Kt {
        #[command(subcommand)]
        command: AdminKtCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminKtCommand {
    /// Publish a key-transparency epoch now with every change waiting (no new epoch when
    /// nothing changed).
    Publish,
}

#[derive(Debug, Subcommand)]
enum AdminReportCommand {
    /// Each reported message with its verified sender, recipient, time, text and verdict.
    Show {
        /// The report id.
        id: u64,
    },
    /// Close a report with an action.
    Resolve {
        /// The report id.
        id: u64,
        /// dismiss (no action), warn (record a warning), suspend (the sender can no longer send).
        #[arg(long, value_parser = ["dismiss", "warn", "suspend"])]
        action: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminAccountCommand {
    /// Set an account's age class.
    SetAge {
        /// The account.
        name: String,
        /// `adult` or `minor`.
        #[arg(value_parser = ["adult", "minor"])]
        age: String,
    },
    /// Suspend an account: it can no longer send (it can still read and report).
    Suspend {
        /// The account.
        name: String,
    },
    /// Lift an account's suspension.
    Unsuspend {
        /// The account.
        name: String,
    },
}

/// Default server for admin commands.
const DEFAULT_SERVER: &str = client_cmds::DEFAULT_SERVER;
/// Default admin token file (the server's default data folder).
const DEFAULT_TOKEN_FILE: &str = "./parley-data/admin.token";

/// mimalloc instead of the C library's allocator: the server allocates and frees many small
/// buffers per message (frames, JSON, envelopes) from several threads, where glibc's malloc
/// spent about a tenth of the bench's CPU time (docs/BENCHMARKS.md, S8).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", client_cmds::describe(&e));
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let ctx = client_cmds::Ctx {
        home: cli.home.clone().unwrap_or_else(client_cmds::default_home),
        server: cli.server.clone(),
        json: cli.json,
        passphrase_file: cli.passphrase_file.clone(),
        opts: parley_client::ClientOptions {
            ca_cert: cli.ca_cert.clone(),
            insecure_http: cli.insecure_http,
            ..Default::default()
        },
    };
    match cli.command {
        Command::Demo => demo::run().await,
        Command::Bench(args) => bench::run(args, cli.server, cli.token_file, cli.json).await,
        Command::Account { command: AccountCommand::Create { username, minor } } => {
            client_cmds::account_create(&ctx, &username, minor).await
        }
        Command::Account { command: AccountCommand::Info } => client_cmds::account_info(&ctx).await,
        Command::Account { command: AccountCommand::Delete { yes } } => {
            client_cmds::account_delete(&ctx, yes).await
        }
        Command::Send { name, text, stdin } => client_cmds::send(&ctx, &name, text, stdin).await,
        Command::Receive { wait, all, reveal } => {
            client_cmds::receive(&ctx, wait, client_cmds::Show { all, reveal }).await
        }
        Command::History { name, reveal } => {
            client_cmds::history(&ctx, &name, client_cmds::Show { all: true, reveal }).await
        }
        Command::Requests => safety_cmds::requests(&ctx).await,
        Command::Accept { name } => safety_cmds::answer_request(&ctx, &name, true).await,
        Command::Decline { name } => safety_cmds::answer_request(&ctx, &name, false).await,
        Command::Block { name, report } => safety_cmds::block(&ctx, &name, true, report).await,
        Command::Unblock { name } => safety_cmds::block(&ctx, &name, false, false).await,
        Command::Report { message_id, context, reason, block } => {
            safety_cmds::report(&ctx, &message_id, context, reason, block).await
        }
        Command::Filters { command } => safety_cmds::filters(&ctx, command).await,
        Command::Contacts => client_cmds::contacts(&ctx).await,
        Command::Verify { name, accept_new_key } => {
            client_cmds::verify(&ctx, &name, accept_new_key).await
        }
        Command::Chat { name } => client_cmds::chat(&ctx, &name).await,
        Command::Ui { port, open } => ui::run(&ctx, port, open).await,
        Command::Audit { state, observed } => {
            let server = cli.server.clone().unwrap_or_else(|| DEFAULT_SERVER.to_string());
            kt_cmds::audit(&server, state.as_deref(), &observed, cli.json).await
        }
        cmd => run_ops(cli.server, cli.token_file, cli.json, cmd).await.map(|()| 0),
    }
}

async fn run_ops(
    server: Option<String>,
    token_file: Option<PathBuf>,
    json: bool,
    command: Command,
) -> Result<()> {
    let cli = OpsArgs { server, token_file, json };
    match command {
        Command::Server(args) => {
            if cli.server.is_some() || cli.token_file.is_some() {
                bail!(
                    "--server and --token-file are for client and admin commands, not for `parley server`"
                );
            }
            run_server(args).await
        }
        Command::Admin { command } => {
            let server = cli.server.unwrap_or_else(|| DEFAULT_SERVER.to_string());
            let token_file = cli.token_file.unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE));
            let admin = AdminApi { server, token: read_token(&token_file)? };
            match command {
                AdminCommand::Stats => admin_stats(&admin, cli.json).await,
                AdminCommand::Account { command: AdminAccountCommand::SetAge { name, age } } => {
                    admin_set_age(&admin, &name, &age, cli.json).await
                }
                AdminCommand::Account { command: AdminAccountCommand::Suspend { name } } => {
                    moderation::suspend(&admin, &name, true, cli.json).await
                }
                AdminCommand::Account { command: AdminAccountCommand::Unsuspend { name } } => {
                    moderation::suspend(&admin, &name, false, cli.json).await
                }
                AdminCommand::Reports => moderation::list(&admin, cli.json).await,
                AdminCommand::Report { command: AdminReportCommand::Show { id } } => {
                    moderation::show(&admin, id, cli.json).await
                }
                AdminCommand::Report { command: AdminReportCommand::Resolve { id, action } } => {
                    moderation::resolve(&admin, id, &action, cli.json).await
                }
                AdminCommand::RotateFrankingKey => moderation::rotate(&admin, cli.json).await,
                AdminCommand::Kt { command: AdminKtCommand::Publish } => {
                    kt_cmds::publish(&admin, cli.json).await
                }
            }
        }
        _ => bail!("internal: not an operator command"),
    }
}

struct OpsArgs {
    server: Option<String>,
    token_file: Option<PathBuf>,
    json: bool,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run_server(args: ServerArgs) -> Result<()> {
    init_logs(args.log_format);
    let mut config = match &args.config {
        Some(path) => parley_server::Config::from_toml_file(path)?,
        None => parley_server::Config::default(),
    };
    if let Some(d) = args.data {
        config.data_dir = d;
    }
    if let Some(db) = args.database {
        config.database = Some(db);
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        config.tls_cert = args.tls_cert;
        config.tls_key = args.tls_key;
    }
    if let Some(n) = args.nats {
        config.nats = Some(n);
    }
    if let Some(k) = args.master_key_file {
        config.master_key_file = Some(k);
    }
    if let Some(secs) = args.kt_epoch_interval {
        config.limits.kt_epoch_interval_secs = secs;
    }
    let running = parley_server::start(config).await?;
    if running.admin_token_created {
        println!("admin token written to {}", running.admin_token_path.display());
    }
    println!("listening on {}", running.url());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await?;
    Ok(())
}

fn read_token(path: &std::path::Path) -> Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    Ok(t)
}

/// The admin API: the server and its admin token.
pub(crate) struct AdminApi {
    server: String,
    token: String,
}

impl AdminApi {
    /// Sends a request; a non-success answer becomes the server's one-sentence error.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut rb = reqwest::Client::new().request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Option<parley_api::ErrorBody> = resp.json().await.ok();
            bail!("the server refused: {} ({status})", body.map(|b| b.message).unwrap_or_default());
        }
        Ok(resp)
    }
}

async fn admin_set_age(admin: &AdminApi, name: &str, age: &str, json: bool) -> Result<()> {
    parley_api::validate_username(name).map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
    admin
        .call(
            reqwest::Method::PUT,
            &format!("/v1/admin/accounts/{name}/age"),
            Some(serde_json::json!({ "age_class": age })),
        )
        .await?;
    if json {
        println!("{}", serde_json::json!({"username": name, "age_class": age}));
    } else {
        println!(
            "{name} is now registered as {}",
            if age == "minor" { "a minor" } else { "an adult" }
        );
    }
    Ok(())
}

async fn admin_stats(admin: &AdminApi, json: bool) -> Result<()> {
    let resp = admin.call(reqwest::Method::GET, "/v1/admin/stats", None).await?;
    let stats: parley_api::AdminStats =
        resp.json().await.context("the server sent an invalid answer")?;
    if json {
        println!("{}", serde_json::to_string(&stats)?);
    } else {
        println!("accounts     {}", stats.accounts);
        println!("devices      {}", stats.devices);
        println!("queued       {}", stats.queued);
        println!("connections  {}", stats.connections);
        let mean = if stats.commits == 0 {
            0.0
        } else {
            stats.committed_operations as f64 / stats.commits as f64
        };
        println!("commits      {} (mean group {:.1})", stats.commits, mean);
    }
    Ok(())
}
