//! `parley ui`: the local web UI (docs/UI.md). A web server on 127.0.0.1 inside the client
//! process serves one embedded page and a JSON API over the unlocked client; keys and crypto
//! never leave this process. Section 1 of docs/UI.md is the security design implemented here:
//! loopback peers only, an exact `Host`, a one-time launch token exchanged for a session
//! cookie, the UI's own `Origin`, a CSRF header on every API request, and a strict CSP.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rand::RngExt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::client_cmds::Ctx;

mod api;
mod engine;

pub(crate) use engine::Engine;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// The session cookie's name.
const COOKIE: &str = "parley_ui";
/// The page's CSRF header.
const CSRF_HEADER: &str = "x-parley-csrf";
/// The Content-Security-Policy of every answer (docs/UI.md §1).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE_CSS: &str = include_str!("../../ui/style.css");
const NO_SESSION_HTML: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Parley</title></head><body><h1>Parley</h1><p>Open the link that <code>parley ui</code> \
printed in your terminal. Each link works once; run <code>parley ui</code> again for a new \
one.</p></body></html>";

/// Random secret as 64 hex characters.
fn secret_hex() -> Zeroizing<String> {
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(rand::rng().random());
    Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Constant-time equality of two secrets (their lengths are public).
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The secrets and fixed facts of one `parley ui` run.
pub(crate) struct Ui {
    port: u16,
    /// Taken (set to `None`) by its one exchange.
    launch: Mutex<Option<Zeroizing<String>>>,
    session: Zeroizing<String>,
    csrf: Zeroizing<String>,
    pub(crate) engine: Engine,
}

impl Ui {
    fn new(port: u16, engine: Engine) -> Ui {
        Ui {
            port,
            launch: Mutex::new(Some(secret_hex())),
            session: secret_hex(),
            csrf: secret_hex(),
            engine,
        }
    }

    fn launch_url(&self) -> Option<String> {
        let launch = self.launch.lock().ok()?;
        let token = launch.as_ref()?;
        Some(format!("http://127.0.0.1:{}/launch?token={}", self.port, token.as_str()))
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        host == format!("127.0.0.1:{}", self.port) || host == format!("localhost:{}", self.port)
    }

    fn origin_ok(&self, origin: &str) -> bool {
        origin == format!("http://127.0.0.1:{}", self.port)
            || origin == format!("http://localhost:{}", self.port)
    }

    /// Browsers send the cookies of every port of 127.0.0.1 in one header, some possibly not
    /// ASCII: it is read as bytes.
    fn has_session(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .filter_map(|kv| {
                let kv = kv.trim_ascii();
                let eq = kv.iter().position(|b| *b == b'=')?;
                Some((kv.get(..eq)?, kv.get(eq + 1..)?))
            })
            .any(|(k, v)| {
                k == COOKIE.as_bytes()
                    && v.len() == self.session.len()
                    && bool::from(v.ct_eq(self.session.as_bytes()))
            })
    }
}

type Shared = Arc<Ui>;

/// `parley ui`: serves until Ctrl-C.
pub(crate) async fn run(ctx: &Ctx, port: u16, open_browser: bool) -> Result<u8> {
    // Warnings of the engine (a failed listening round) go to stderr; PARLEY_LOG as for the
    // server.
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARLEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let settings = engine::Settings {
        home: ctx.home.clone(),
        server_override: ctx.server.clone(),
        opts: ctx.opts.clone(),
    };
    // With --passphrase-file or PARLEY_PASSPHRASE the UI starts unlocked; otherwise the page
    // asks for the passphrase.
    let client = if ctx.passphrase_file.is_some() || std::env::var_os("PARLEY_PASSPHRASE").is_some()
    {
        Some(crate::client_cmds::open(ctx).await?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let port = listener.local_addr()?.port();
    let ui = Arc::new(Ui::new(port, Engine::start(settings, client)));
    let url = ui.launch_url().context("no launch token")?;
    println!("open {url}");
    eprintln!("(the link works once; Ctrl-C stops the UI)");
    let _launch_file = if open_browser { open_in_browser(&url) } else { None };
    let app = router(ui.clone());
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    // Let a request in progress finish, then close the store (checkpointing its WAL).
    ui.engine.shutdown().await;
    served.context("the UI server failed")?;
    Ok(0)
}

/// `--open`: hands the link to the desktop's browser through a private file (mode 0600) that
/// redirects to it, so that the token never appears on a command line other users can read
/// (`/proc/*/cmdline`). The file lives as long as the returned handle.
fn open_in_browser(url: &str) -> Option<tempfile::NamedTempFile> {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={url}\"><title>Parley</title></head>\
         <body><a href=\"{url}\">Open Parley</a></body></html>"
    );
    let file = tempfile::Builder::new().prefix("parley-ui-").suffix(".html").tempfile().and_then(
        |mut f| {
            std::io::Write::write_all(&mut f, page.as_bytes())?;
            Ok(f)
        },
    );
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            eprintln!("could not write the launch file ({e}); open the link above yourself");
            return None;
        }
    };
    match std::process::Command::new(opener)
        .arg(file.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => Some(file),
        Err(e) => {
            eprintln!("could not start {opener} ({e}); open the link above yourself");
            None
        }
    }
}

/// The whole application: pages, assets and the API behind the security layer.
pub(crate) fn router(ui: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/launch", get(launch))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .nest("/api", api::routes(ui.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(ui.clone(), guard))
        .with_state(ui)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

/// The security layer in front of everything (docs/UI.md §1), and the headers on every answer.
async fn guard(
    State(ui): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = match check(&ui, peer, &req) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `Some(refusal)` when the request must not reach the application.
fn check(ui: &Ui, peer: SocketAddr, req: &Request) -> Option<Response> {
    if !peer.ip().is_loopback() {
        return Some(refuse(StatusCode::FORBIDDEN, "the UI answers this machine only"));
    }
    let headers = req.headers();
    if !ui.host_ok(headers) {
        return Some(refuse(StatusCode::MISDIRECTED_REQUEST, "unexpected Host header"));
    }
    if !req.uri().path().starts_with("/api/") {
        return None;
    }
    if !ui.has_session(headers) {
        return Some(refuse(
            StatusCode::UNAUTHORIZED,
            "no session: open the link that `parley ui` printed",
        ));
    }
    let origin = headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or(""));
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|u| u.to_str().ok())
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    match origin {
        Some(o) if !ui.origin_ok(o) => {
            return Some(refuse(StatusCode::FORBIDDEN, "cross-origin request refused"));
        }
        Some(_) => {}
        // Browsers omit Origin on same-origin GETs; everything else must carry it.
        None if req.method() != Method::GET || websocket => {
            return Some(refuse(StatusCode::FORBIDDEN, "request without Origin refused"));
        }
        None => {}
    }
    // Browsers say where a request comes from; the page's own requests are same-origin.
    let site = headers.get("sec-fetch-site").map(|s| s.to_str().unwrap_or(""));
    if site.is_some_and(|s| s != "same-origin") {
        return Some(refuse(StatusCode::FORBIDDEN, "cross-site request refused"));
    }
    // WebSocket upgrades cannot carry a custom header: their token is in the query.
    let token = if websocket {
        req.uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("csrf=")).map(str::to_string))
    } else {
        headers.get(CSRF_HEADER).and_then(|t| t.to_str().ok()).map(str::to_string)
    };
    if !token.is_some_and(|t| same_secret(&t, &ui.csrf)) {
        return Some(refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token"));
    }
    if req.method() != Method::GET {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        if !json {
            return Some(refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON"));
        }
    }
    None
}

async fn index(State(ui): State<Shared>, headers: HeaderMap) -> Response {
    if !ui.has_session(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            NO_SESSION_HTML,
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML).into_response()
}

#[derive(serde::Deserialize)]
struct LaunchQuery {
    token: Option<String>,
}

async fn launch(
    State(ui): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<LaunchQuery>,
) -> Response {
    // The browser that exchanged the link and opens it again just goes back to the page.
    if ui.has_session(&headers) {
        return Redirect::to("/").into_response();
    }
    let offered = query.token.map(Zeroizing::new);
    let accepted = match ui.launch.lock() {
        Ok(mut slot) => {
            let ok = match (slot.as_ref(), offered.as_ref()) {
                (Some(t), Some(o)) => same_secret(t, o),
                _ => false,
            };
            if ok {
                *slot = None;
            }
            ok
        }
        Err(_) => false,
    };
    if !accepted {
        return refuse(
            StatusCode::FORBIDDEN,
            "this launch link is wrong or was already used; run `parley ui` again",
        );
    }
    // Shown in the terminal, so that a redemption that was not the user's is noticed.
    eprintln!("the launch link was used; the UI is open in that browser");
    let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", ui.session.as_str());
    // The CSRF token travels in the fragment, which only this browser sees: the page keeps
    // it in its sessionStorage (bound to this origin and port). Cookies are shared by every
    // port of 127.0.0.1, so the cookie alone must not be enough to read the token.
    let mut resp = Redirect::to(&format!("/#token={}", ui.csrf.as_str())).into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp
        }
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "could not set the session cookie"),
    }
}

#[cfg(test)]
mod tests;
