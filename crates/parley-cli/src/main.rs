//! `parley`: one binary for the server, the client and the operator. The contract (global
//! options, exit codes, JSON fields) is CLI.md; commands arrive with the features they drive.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

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
    /// The server URL for client and admin commands (default http://127.0.0.1:7470).
    #[arg(long, global = true, env = "PARLEY_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Admin commands: file holding the admin token (the server writes DATA/admin.token).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
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
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
}

/// Default server for client and admin commands.
const DEFAULT_SERVER: &str = "http://127.0.0.1:7470";
/// Default admin token file (the server's default data folder).
const DEFAULT_TOKEN_FILE: &str = "./parley-data/admin.token";

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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Server(args) => {
            if cli.server.is_some() || cli.token_file.is_some() {
                bail!(
                    "--server and --token-file are for client and admin commands, not for `parley server`"
                );
            }
            server(args).await
        }
        Command::Admin { command: AdminCommand::Stats } => {
            let server = cli.server.unwrap_or_else(|| DEFAULT_SERVER.to_string());
            let token_file = cli.token_file.unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE));
            admin_stats(&server, &token_file, cli.json).await
        }
    }
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

async fn server(args: ServerArgs) -> Result<()> {
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

async fn admin_stats(server: &str, token_file: &std::path::Path, json: bool) -> Result<()> {
    let token = read_token(token_file)?;
    let url = format!("{}/v1/admin/stats", server.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: Option<parley_api::ErrorBody> = resp.json().await.ok();
        bail!("the server refused: {} ({status})", body.map(|b| b.message).unwrap_or_default());
    }
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
