//! HTTP and WebSocket transport to the server, with the TLS policy: `https://` is verified
//! against public roots (plus an optional extra CA); `http://` is allowed only to loopback
//! hosts unless explicitly permitted.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parley_api::ErrorBody;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use zeroize::Zeroizing;

use crate::ClientError;

/// How long one HTTP request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A checked server base URL.
#[derive(Debug, Clone)]
pub(crate) struct ServerUrl {
    /// `http://host:port` or `https://host:port` without a trailing slash.
    pub(crate) base: String,
    pub(crate) tls: bool,
}

/// Parses and applies the TLS policy to a server URL.
pub(crate) fn check_server_url(url: &str, insecure_http: bool) -> Result<ServerUrl, ClientError> {
    let bad = || ClientError::InvalidServerUrl(url.to_string());
    let parsed = reqwest::Url::parse(url).map_err(|_| bad())?;
    let tls = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(bad()),
    };
    let host = parsed.host_str().ok_or_else(bad)?;
    if !tls && !insecure_http && !is_loopback(host) {
        return Err(ClientError::InsecureServer);
    }
    Ok(ServerUrl { base: url.trim_end_matches('/').to_string(), tls })
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An HTTP client for one server, optionally authenticated.
pub(crate) struct Http {
    pub(crate) url: ServerUrl,
    client: reqwest::Client,
    ws_tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { url, client: _, ws_tls: _, token } = self;
        f.debug_struct("Http")
            .field("url", &url.base)
            .field("token", &token.as_ref().map(|_| "***"))
            .finish()
    }
}

fn read_ca(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| {
        ClientError::Tls(format!("cannot read the CA certificate {}: {e}", path.display()))
    })
}

fn ws_tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("bad CA certificate: {e}")))?;
            roots.add(cert).map_err(|e| ClientError::Tls(format!("bad CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Maps a transport error: connection and timeout failures are "unreachable".
fn net_error(e: &reqwest::Error) -> ClientError {
    if let Some(tls) = tls_failure(e) {
        return ClientError::Tls(tls);
    }
    if e.is_connect() || e.is_timeout() || e.is_request() {
        ClientError::Unreachable(root_cause(e))
    } else if e.is_decode() {
        ClientError::Protocol(root_cause(e))
    } else {
        ClientError::Unreachable(root_cause(e))
    }
}

/// A TLS failure (an untrusted or mismatched certificate) somewhere in the error chain: not
/// "unreachable", since retrying will not help.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // `io::Error` hides what it wraps from `source()`: look inside, layer by layer.
        let mut inner: &(dyn std::error::Error + 'static) = err;
        loop {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(r.to_string());
            }
            match inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        cur = err.source();
    }
    None
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// An HTTP answer that is not 2xx.
async fn error_from(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::BAD_GATEWAY {
        return ClientError::Unreachable(format!("the server answered {status}"));
    }
    match resp.json::<ErrorBody>().await {
        Ok(b) => ClientError::Server { status: status.as_u16(), code: b.error, message: b.message },
        Err(_) => ClientError::Server {
            status: status.as_u16(),
            code: "unknown".into(),
            message: format!("HTTP {status}"),
        },
    }
}

/// An answer: the parsed body, or the status and raw body for the caller to judge.
pub(crate) enum Answer<T> {
    Ok(T),
    Conflict(bytes_body::Body),
}

/// Raw bodies kept for 409 answers.
pub(crate) mod bytes_body {
    /// A response body.
    pub(crate) type Body = Vec<u8>;
}

impl Http {
    pub(crate) fn new(
        url: ServerUrl,
        ca_cert: Option<&Path>,
        token: Option<Zeroizing<String>>,
    ) -> Result<Self, ClientError> {
        let ca = ca_cert.map(read_ca).transpose()?;
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("parley-client/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Tls(format!("bad CA certificate: {e}")))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| ClientError::Tls(root_cause(&e)))?;
        let ws_tls = if url.tls { Some(ws_tls_config(ca.as_deref())?) } else { None };
        Ok(Self { url, client, ws_tls, token })
    }

    pub(crate) fn set_token(&mut self, token: Zeroizing<String>) {
        self.token = Some(token);
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.url.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t.as_str()),
            None => rb,
        }
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<Answer<T>, ClientError> {
        let resp = rb.send().await.map_err(|e| net_error(&e))?;
        let status = resp.status();
        if status == StatusCode::CONFLICT {
            let body = resp.bytes().await.map_err(|e| net_error(&e))?;
            return Ok(Answer::Conflict(body.to_vec()));
        }
        if !status.is_success() {
            return Err(error_from(resp).await);
        }
        if status == StatusCode::NO_CONTENT {
            return serde_json::from_slice(b"null")
                .map(Answer::Ok)
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
        resp.json::<T>().await.map(Answer::Ok).map_err(|e| net_error(&e))
    }

    fn conflict_as_error<T>(a: Answer<T>) -> Result<T, ClientError> {
        match a {
            Answer::Ok(t) => Ok(t),
            Answer::Conflict(body) => {
                let b: Option<ErrorBody> = serde_json::from_slice(&body).ok();
                Err(ClientError::Server {
                    status: 409,
                    code: b.as_ref().map_or_else(|| "conflict".into(), |b| b.error.clone()),
                    message: b.map_or_else(|| "conflict".into(), |b| b.message),
                })
            }
        }
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::conflict_as_error(self.finish(self.req(reqwest::Method::GET, path)).await?)
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<(), ClientError> {
        Self::conflict_as_error(
            self.finish::<Option<serde_json::Value>>(self.req(reqwest::Method::DELETE, path))
                .await?,
        )
        .map(|_| ())
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>, ClientError> {
        self.finish(self.req(reqwest::Method::POST, path).json(body)).await
    }

    pub(crate) async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Self::conflict_as_error(self.finish(self.req(reqwest::Method::PUT, path).json(body)).await?)
    }

    /// Opens the delivery WebSocket (`/v1/ws`).
    pub(crate) async fn websocket(&self) -> Result<Ws, ClientError> {
        let ws_url = if self.url.tls {
            self.url.base.replacen("https://", "wss://", 1)
        } else {
            self.url.base.replacen("http://", "ws://", 1)
        } + "/v1/ws";
        let mut req = ws_url
            .into_client_request()
            .map_err(|e| ClientError::InvalidServerUrl(e.to_string()))?;
        if let Some(t) = &self.token {
            let value = format!("Bearer {}", t.as_str())
                .parse()
                .map_err(|_| ClientError::Protocol("token is not a valid header".into()))?;
            req.headers_mut().insert("authorization", value);
        }
        let connector = self.ws_tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let fut = tokio_tungstenite::connect_async_tls_with_config(req, None, true, connector);
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Err(_) => Err(ClientError::Unreachable("WebSocket connection timed out".into())),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body: Option<ErrorBody> =
                    resp.body().as_ref().and_then(|b| serde_json::from_slice(b).ok());
                if status == 503 {
                    return Err(ClientError::Unreachable("the server is unavailable".into()));
                }
                Err(ClientError::Server {
                    status,
                    code: body.as_ref().map_or_else(|| "unknown".into(), |b| b.error.clone()),
                    message: body.map_or_else(|| format!("HTTP {status}"), |b| b.message),
                })
            }
            Ok(Err(tokio_tungstenite::tungstenite::Error::Tls(e))) => {
                Err(ClientError::Tls(e.to_string()))
            }
            Ok(Err(e)) => match tls_failure(&e) {
                Some(t) => Err(ClientError::Tls(t)),
                None => Err(ClientError::Unreachable(e.to_string())),
            },
        }
    }
}

/// The delivery WebSocket.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn policy() {
        assert!(check_server_url("http://127.0.0.1:7470", false).is_ok());
        assert!(check_server_url("http://localhost:7470/", false).is_ok());
        assert!(check_server_url("http://[::1]:7470", false).is_ok());
        assert!(matches!(
            check_server_url("http://example.com", false),
            Err(ClientError::InsecureServer)
        ));
        assert!(check_server_url("http://example.com", true).is_ok());
        assert!(check_server_url("https://example.com", false).unwrap().tls);
        assert!(matches!(
            check_server_url("ftp://example.com", false),
            Err(ClientError::InvalidServerUrl(_))
        ));
    }
}
