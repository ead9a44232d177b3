//! The security layer, request by request, on the router itself (docs/UI.md §1). The same
//! rules are exercised against a real `parley ui` process in tests/ui.rs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::{COOKIE, CSRF_HEADER, Engine, Ui, engine, router};

const PORT: u16 = 4321;

struct Fixture {
    ui: Arc<Ui>,
    _home: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let home = tempfile::tempdir().expect("tempdir");
    let settings = engine::Settings {
        home: home.path().to_path_buf(),
        server_override: None,
        opts: parley_client::ClientOptions::default(),
    };
    Fixture { ui: Arc::new(Ui::new(PORT, Engine::start(settings, None))), _home: home }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50000))
}

async fn call(ui: &Arc<Ui>, peer: SocketAddr, req: Request<Body>) -> axum::response::Response {
    router(ui.clone()).layer(MockConnectInfo(peer)).oneshot(req).await.expect("infallible")
}

fn host() -> String {
    format!("127.0.0.1:{PORT}")
}

fn origin() -> String {
    format!("http://127.0.0.1:{PORT}")
}

fn cookie(ui: &Ui) -> String {
    format!("{COOKIE}={}", ui.session.as_str())
}

/// A request as the page makes it: right Host, cookie, Origin and CSRF header.
fn api(ui: &Ui, method: &str, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host())
        .header(header::COOKIE, cookie(ui))
        .header(header::ORIGIN, origin())
        .header(CSRF_HEADER, ui.csrf.as_str())
        .header(header::CONTENT_TYPE, "application/json")
}

/// The page's request with one header replaced (or removed when `value` is empty).
fn api_with(ui: &Ui, method: &str, path: &str, name: &str, value: &str) -> Request<Body> {
    let mut req = api(ui, method, path).body(Body::from("{}")).unwrap();
    let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
    if value.is_empty() {
        req.headers_mut().remove(&name);
    } else {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    req
}

async fn body_text(resp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn the_pages_own_requests_pass() {
    let f = fixture();
    let resp =
        call(&f.ui, loopback(), api(&f.ui, "GET", "/api/state").body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let csp = resp.headers().get(header::CONTENT_SECURITY_POLICY).expect("csp").to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"), "{csp}");
    let v: serde_json::Value = serde_json::from_str(&body_text(resp).await).unwrap();
    assert_eq!(v["locked"], true);
    assert_eq!(v["has_account"], false);
    // A POST with everything right goes through too.
    let resp =
        call(&f.ui, loopback(), api(&f.ui, "POST", "/api/lock").body(Body::from("{}")).unwrap())
            .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_a_session() {
    let f = fixture();
    for h in ["evil.example", "evil.example:4321", "127.0.0.1:9999", "127.0.0.1"] {
        let req = api_with(&f.ui, "GET", "/api/state", "host", h);
        let resp = call(&f.ui, loopback(), req).await;
        assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST, "{h}");
    }
    let req = Request::builder().uri("/").header(header::HOST, "rebound.example:4321");
    let resp = call(&f.ui, loopback(), req.body(Body::empty()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);
}

#[tokio::test]
async fn a_non_loopback_peer_is_refused() {
    let f = fixture();
    let remote = SocketAddr::from(([192, 168, 1, 20], 40000));
    let req = api(&f.ui, "GET", "/api/state").body(Body::empty()).unwrap();
    assert_eq!(call(&f.ui, remote, req).await.status(), StatusCode::FORBIDDEN);
    let req = Request::builder().uri("/").header(header::HOST, host()).body(Body::empty()).unwrap();
    assert_eq!(call(&f.ui, remote, req).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_launch_token_works_once_and_sets_a_strict_cookie() {
    let f = fixture();
    let url = f.ui.launch_url().expect("token");
    let path = url.split_once(&format!(":{PORT}")).expect("port").1.to_string();
    let launch = |p: &str| {
        Request::builder().uri(p).header(header::HOST, host()).body(Body::empty()).unwrap()
    };
    let wrong = format!("/launch?token={}", "0".repeat(64));
    assert_eq!(call(&f.ui, loopback(), launch(&wrong)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(call(&f.ui, loopback(), launch("/launch")).await.status(), StatusCode::FORBIDDEN);
    let resp = call(&f.ui, loopback(), launch(&path)).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers().get(header::SET_COOKIE).expect("cookie").to_str().unwrap();
    assert!(set.starts_with(&cookie(&f.ui)), "{set}");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    // The CSRF token goes to this browser only, in the fragment.
    let to = resp.headers().get(header::LOCATION).expect("location").to_str().unwrap();
    assert_eq!(to, format!("/#token={}", f.ui.csrf.as_str()));
    // Used once: the same link is dead now, for anyone without the session.
    assert_eq!(call(&f.ui, loopback(), launch(&path)).await.status(), StatusCode::FORBIDDEN);
    assert!(f.ui.launch_url().is_none());
    // The browser that has the session and opens the link again just goes back to the page.
    let mut again = launch(&path);
    again.headers_mut().insert(header::COOKIE, cookie(&f.ui).parse().unwrap());
    let resp = call(&f.ui, loopback(), again).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get(header::LOCATION).unwrap(), "/");
}

#[tokio::test]
async fn without_the_session_cookie_nothing_is_served_but_a_hint() {
    let f = fixture();
    let req = Request::builder().uri("/").header(header::HOST, host()).body(Body::empty()).unwrap();
    let resp = call(&f.ui, loopback(), req).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let page = body_text(resp).await;
    assert!(!page.contains(f.ui.csrf.as_str()) && page.contains("parley ui"));
    for c in [String::new(), format!("{COOKIE}={}", "a".repeat(64))] {
        let req = api_with(&f.ui, "GET", "/api/state", "cookie", &c);
        assert_eq!(call(&f.ui, loopback(), req).await.status(), StatusCode::UNAUTHORIZED);
    }
    // With it, the page — but never the CSRF token: cookies reach every port of 127.0.0.1,
    // so whoever holds only the cookie must not be able to read the token.
    let req = api(&f.ui, "GET", "/").body(Body::empty()).unwrap();
    let resp = call(&f.ui, loopback(), req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_text(resp).await;
    assert!(page.contains("/app.js") && !page.contains(f.ui.csrf.as_str()));
    // A cookie header with bytes that are not ASCII (another port's cookie) does not hide ours.
    let mut req = api(&f.ui, "GET", "/api/state").body(Body::empty()).unwrap();
    let mixed = format!("other=caf\u{e9}; {}", cookie(&f.ui));
    req.headers_mut()
        .insert(header::COOKIE, axum::http::HeaderValue::from_bytes(mixed.as_bytes()).unwrap());
    assert_eq!(call(&f.ui, loopback(), req).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn cross_origin_and_forged_requests_are_refused() {
    let f = fixture();
    let zeros = "0".repeat(64);
    let forged = [
        // Another port of localhost: same site for SameSite, another origin here.
        ("POST", "origin", "http://127.0.0.1:8080"),
        ("POST", "origin", "null"),
        // Without Origin, without or with a wrong CSRF token.
        ("POST", "origin", ""),
        ("POST", CSRF_HEADER, ""),
        ("POST", CSRF_HEADER, zeros.as_str()),
        ("GET", CSRF_HEADER, ""),
        ("GET", "origin", "https://evil.example"),
        ("GET", "sec-fetch-site", "same-site"),
    ];
    for (method, name, value) in forged {
        let path = if method == "GET" { "/api/state" } else { "/api/lock" };
        let resp = call(&f.ui, loopback(), api_with(&f.ui, method, path, name, value)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {name}: {value:?}");
    }
    // Not JSON: what an HTML form can send.
    let form = api_with(&f.ui, "POST", "/api/lock", "content-type", "text/plain");
    assert_eq!(call(&f.ui, loopback(), form).await.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn hostile_bodies_and_paths_get_clear_errors() {
    let f = fixture();
    let big = format!("{{\"passphrase\":\"{}\"}}", "x".repeat(100 * 1024));
    let resp =
        call(&f.ui, loopback(), api(&f.ui, "POST", "/api/unlock").body(Body::from(big)).unwrap())
            .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp =
        call(&f.ui, loopback(), api(&f.ui, "POST", "/api/unlock").body(Body::from("{")).unwrap())
            .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let resp = call(
        &f.ui,
        loopback(),
        api(&f.ui, "GET", "/api/conversations/..%2F..").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Locked: the API says so rather than failing obscurely.
    let resp = call(
        &f.ui,
        loopback(),
        api(&f.ui, "GET", "/api/conversations").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(resp).await.contains("locked"));
}

#[tokio::test]
async fn the_events_socket_needs_the_origin_and_the_token_in_its_query() {
    let f = fixture();
    let upgrade = |origin: &str, query: &str| {
        let mut req = api(&f.ui, "GET", &format!("/api/events{query}"))
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Body::empty())
            .unwrap();
        if origin.is_empty() {
            req.headers_mut().remove(header::ORIGIN);
        } else {
            req.headers_mut().insert(header::ORIGIN, origin.parse().unwrap());
        }
        // Browsers cannot add a header to an upgrade: only the query can carry the token.
        req.headers_mut().remove(CSRF_HEADER);
        req
    };
    let good = format!("?csrf={}", f.ui.csrf.as_str());
    for (origin, query) in [
        (origin(), String::new()),
        (origin(), format!("?csrf={}", "0".repeat(64))),
        ("http://127.0.0.1:8080".to_string(), good.clone()),
        (String::new(), good.clone()),
    ] {
        let resp = call(&f.ui, loopback(), upgrade(&origin, &query)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{origin:?} {query}");
    }
    // With both, the request reaches the upgrade (which needs a real connection to finish).
    let resp = call(&f.ui, loopback(), upgrade(&origin(), &good)).await;
    assert_ne!(resp.status(), StatusCode::FORBIDDEN);
}
