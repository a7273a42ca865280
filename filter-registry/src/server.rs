//! OCI distribution spec v1.1 server on hyper 1 (HTTP/1.1, or HTTPS with rustls via
//! [`serve_tls`]), over [`crate::store::Store`].
//!
//! Request bodies are read into memory (capped: 4 MiB for manifests, [`MAX_BLOB_BODY`] per
//! blob request); store calls run on tokio's blocking pool.
//!
//! Auth: with a push (or pull) token set, such requests need `Authorization: Bearer <token>`,
//! Basic with the token as password, or a token from the registry's own token service
//! (`/token`, see [`crate::grants`]); the push token also allows pulls. A refused request gets
//! `401` with `WWW-Authenticate: Bearer realm="<scheme>://<host>/token",service=…,scope=…`,
//! so Docker-style clients (skopeo, oras, containerd, this crate's client) log in by
//! themselves.
//!
//! Beyond v1.1.1, from the spec's development branch: `DELETE` of an upload (204),
//! `POST …/uploads/?digest-algorithm=sha512` (kept in the upload's location; the closing digest
//! must use it), and `PUT …/manifests/<digest>?tag=a&tag=b` (answered with `OCI-Tag` headers).

// Handlers use `Result<_, Response>`: the error side is the ready-made error response.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::grants::{Grant, Issued, TOKEN_LIFETIME};
use crate::store::{
    Digest, Reference, Store, StoreError, referenced_digests, validate_repo_name, validate_tag,
};
use crate::tls;

/// Manifests larger than this are refused with 413.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Largest body accepted by one blob request (POST, PATCH or PUT).
pub const MAX_BLOB_BODY: usize = crate::store::MAX_BLOB_SIZE as usize;
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The `service` the registry names in its challenges and token answers.
pub const SERVICE: &str = "wasmesh-registry";
/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The token the token service hands anonymous callers: it grants what needs no token.
const ANONYMOUS_TOKEN: &str = "anonymous";
/// How long a shut-down registry lets requests in flight finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Most `?tag=` parameters one manifest PUT may carry.
const MAX_TAGS_PER_PUT: usize = 100;

/// Server configuration.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Store root directory (created if missing).
    pub root: PathBuf,
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// When set, push requests (POST/PATCH/PUT/DELETE) need this token.
    pub push_token: Option<String>,
    /// When set, pull requests (GET/HEAD) need this token.
    pub pull_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on non-loopback address {0} without a push token: anyone could push filters; set push_token or listen on 127.0.0.1/::1"
    )]
    InsecureBind(SocketAddr),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The certificate chain and private key (PEM files) a TLS registry serves with.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running registry: its bound address and a shutdown handle.
pub struct RunningRegistry {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRegistry {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningRegistry {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

struct State {
    store: Store,
    push_token: Option<String>,
    pull_token: Option<String>,
    issued: Issued,
    tls: bool,
    addr: SocketAddr,
}

/// Binds and serves the registry (plain HTTP) in the background.
pub async fn serve(config: RegistryConfig) -> Result<RunningRegistry, ServeError> {
    serve_with(config, None).await
}

/// Binds and serves the registry over HTTPS, with the certificate and key in `tls`.
pub async fn serve_tls(
    config: RegistryConfig,
    tls: TlsFiles,
) -> Result<RunningRegistry, ServeError> {
    let server_config = tls::server_config(&tls.cert, &tls.key)?;
    serve_with(config, Some(server_config)).await
}

async fn serve_with(
    config: RegistryConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<RunningRegistry, ServeError> {
    if config.push_token.is_none() {
        if !config.listen.ip().is_loopback() {
            return Err(ServeError::InsecureBind(config.listen));
        }
        tracing::warn!(addr = %config.listen, "registry has no push token: anyone on this host can push");
    }
    let store = Store::open(&config.root)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let use_tls = tls.is_some();
    let state = Arc::new(State {
        store,
        push_token: config.push_token,
        pull_token: config.pull_token,
        issued: Issued::default(),
        tls: tls.is_some(),
        addr,
    });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                _ = &mut rx => break,
                acc = listener.accept() => {
                    let (stream, peer) = match acc {
                        Ok(x) => x,
                        Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(
                        stream,
                        peer,
                        state.clone(),
                        acceptor.clone(),
                        graceful.watcher(),
                    ));
                }
            }
        }
        // Requests in flight finish (for a while); idle keep-alive connections close now, so
        // a stopped registry really is gone for its clients.
        drop(listener);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    });
    tracing::info!(%addr, tls = use_tls, "registry listening");
    Ok(RunningRegistry {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// Serves one accepted connection, after a (bounded) TLS handshake when serving TLS.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let Some(acceptor) = acceptor else {
        return serve_connection(TokioIo::new(stream), state, peer, watcher).await;
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), state, peer, watcher).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_connection<I>(
    io: I,
    state: Arc<State>,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

type Resp = Response<Full<Bytes>>;

fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn store_error(e: &StoreError) -> Resp {
    let msg = e.to_string();
    match e {
        StoreError::NameInvalid(_) => error(StatusCode::BAD_REQUEST, "NAME_INVALID", &msg),
        StoreError::TagInvalid(_) => error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", &msg),
        StoreError::DigestInvalid(_) | StoreError::DigestMismatch { .. } => {
            error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", &msg)
        }
        StoreError::BlobUnknown(_) => error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", &msg),
        StoreError::ManifestUnknown(_) => error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", &msg),
        StoreError::UploadUnknown(_) => error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", &msg),
        StoreError::BlobInUse(_) => error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", &msg),
        StoreError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", &msg),
        StoreError::RangeInvalid { .. } => error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            &msg,
        ),
        StoreError::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            tracing::error!(error = %e, "registry storage is full");
            error(
                StatusCode::INSUFFICIENT_STORAGE,
                "UNKNOWN",
                "registry storage is full",
            )
        }
        StoreError::Io { .. } => {
            tracing::error!(error = %e, "store I/O error");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal storage error",
            )
        }
    }
}

fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn set(r: &mut Resp, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// The host clients reached us by (for the token realm): the `Host` header when it is a
/// plain `host[:port]`, else the bound address.
fn public_host<B>(state: &State, req: &Request<B>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.addr.to_string())
}

/// `401` with a Bearer challenge naming this registry's token service and the scope needed.
fn unauthorized<B>(state: &State, req: &Request<B>, scope: Option<String>) -> Resp {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    let scheme = if state.tls { "https" } else { "http" };
    let mut challenge = format!(
        r#"Bearer realm="{scheme}://{}/token",service="{SERVICE}""#,
        public_host(state, req)
    );
    if let Some(scope) = scope {
        challenge.push_str(&format!(r#",scope="{scope}""#));
    }
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Constant-time-ish comparison (length leaks, content does not).
fn token_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a secret (a configured token, given as Bearer, Basic password or OAuth2 grant) allows.
/// `None` when it matches neither token.
fn secret_grant(state: &State, secret: &str) -> Option<Grant> {
    let s = secret.as_bytes();
    if state
        .push_token
        .as_deref()
        .is_some_and(|t| token_eq(s, t.as_bytes()))
    {
        return Some(Grant {
            pull: true,
            push: true,
        });
    }
    if state
        .pull_token
        .as_deref()
        .is_some_and(|t| token_eq(s, t.as_bytes()))
    {
        return Some(Grant {
            pull: true,
            push: state.push_token.is_none(),
        });
    }
    None
}

/// The password of a Basic `Authorization` value.
fn basic_password(value: &str) -> Option<String> {
    let decoded = BASE64.decode(value.trim()).ok()?;
    let pos = decoded.iter().position(|&c| c == b':')?;
    String::from_utf8(decoded[pos + 1..].to_vec()).ok()
}

/// What anonymous callers may do: whatever needs no token.
fn anonymous_grant(state: &State) -> Grant {
    Grant {
        pull: state.pull_token.is_none(),
        push: state.push_token.is_none(),
    }
}

/// What the request's `Authorization` header allows, if it carries anything we know.
fn request_grant<B>(state: &State, req: &Request<B>) -> Option<Grant> {
    let h = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    // Auth schemes are case-insensitive (RFC 9110 §11.1).
    let (scheme, credential) = h.trim().split_once(' ')?;
    let credential = credential.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if credential == ANONYMOUS_TOKEN {
            return Some(anonymous_grant(state));
        }
        return secret_grant(state, credential).or_else(|| state.issued.grant(credential));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return secret_grant(state, &basic_password(credential)?);
    }
    None
}

/// Whether the version check (`GET /v2/`) passes. With any token configured it needs some
/// valid credential — an anonymous token from the token service will do — so that clients
/// which decide from this ping whether to authenticate (containers/image, Docker) learn the
/// realm before they try to push.
fn ping_allowed<B>(state: &State, req: &Request<B>) -> bool {
    (state.push_token.is_none() && state.pull_token.is_none())
        || request_grant(state, req).is_some()
}

/// Whether the request may proceed: `push` for writes, else reads.
fn allowed<B>(state: &State, req: &Request<B>, push: bool) -> bool {
    let needed = if push {
        &state.push_token
    } else {
        &state.pull_token
    };
    needed.is_none() || request_grant(state, req).is_some_and(|g| g.allows(push))
}

/// `401` from the token service itself: it takes Basic credentials.
fn token_refused(message: &str) -> Resp {
    let mut r = error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Basic realm="wasmesh-registry""#),
    );
    r
}

/// The token service: `GET /token?service=&scope=` with Basic credentials (or none), or
/// `POST /token` with an OAuth2 `password` or `refresh_token` grant.
async fn token_service(state: &State, req: Request<Incoming>) -> Resp {
    let mut scopes: Vec<String> = query_params(&req, "scope");
    let secret: Option<String>;
    if req.method() == Method::POST {
        let body = match read_body(req, 64 * 1024).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let form = String::from_utf8_lossy(&body).into_owned();
        let field = |key: &str| -> Vec<String> {
            form.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k) == key).then(|| percent_decode(v))
                })
                .collect()
        };
        scopes.extend(field("scope"));
        secret = match field("grant_type").first().map(String::as_str) {
            Some("password") => field("password").into_iter().next(),
            Some("refresh_token") => field("refresh_token").into_iter().next(),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "grant_type must be password or refresh_token",
                );
            }
        };
    } else if req.method() == Method::GET {
        secret = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, b)| basic_password(b));
    } else {
        return unsupported();
    }
    let allowed = match secret.as_deref() {
        Some(s) => match secret_grant(state, s) {
            Some(g) => g,
            None => return token_refused("bad credentials"),
        },
        None => anonymous_grant(state),
    };
    // Grant no more than asked for (all the credential allows when no scope is named).
    let wanted = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| s.rsplit_once(':').map(|(_, actions)| actions))
        .fold(None::<Grant>, |acc, actions| {
            let mut g = acc.unwrap_or_default();
            for a in actions.split(',') {
                match a {
                    "pull" => g.pull = true,
                    "push" | "*" | "delete" => {
                        g.push = true;
                        g.pull |= a == "*";
                    }
                    _ => {}
                }
            }
            Some(g)
        });
    let grant = match wanted {
        Some(w) => Grant {
            pull: allowed.pull && w.pull,
            push: allowed.push && w.push,
        },
        None => allowed,
    };
    let token = if secret.is_none() {
        if !allowed.pull && !allowed.push {
            return token_refused("credentials required");
        }
        // Anonymous callers get a token that grants nothing beyond anonymous access, so
        // nothing needs remembering for them.
        ANONYMOUS_TOKEN.to_string()
    } else {
        state.issued.issue(grant)
    };
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME.as_secs(),
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    set(&mut r, "content-type", "application/json");
    set(&mut r, "cache-control", "no-store");
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    query_params(req, key).into_iter().next()
}

fn query_params(req: &Request<Incoming>, key: &str) -> Vec<String> {
    let Some(q) = req.uri().query() else {
        return Vec::new();
    };
    q.split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| percent_decode(v))
        })
        .collect()
}

enum Route<'a> {
    Ping,
    Tags(&'a str),
    Uploads(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Manifest(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(Route::Ping);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest.strip_suffix("/blobs/uploads") {
        return Some(Route::Uploads(name, ""));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Some(Route::Uploads(name, id));
    }
    if let Some((name, d)) = rest.rsplit_once("/blobs/") {
        return Some(Route::Blob(name, d));
    }
    if let Some((name, r)) = rest.rsplit_once("/manifests/") {
        return Some(Route::Manifest(name, r));
    }
    if let Some((name, d)) = rest.rsplit_once("/referrers/") {
        return Some(Route::Referrers(name, d));
    }
    None
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Resp> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "SIZE_INVALID",
                    "body too large",
                ))
            } else {
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    "body read failed",
                ))
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Resp> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_error(&e)),
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "internal error",
        )),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if path == "/token" {
        return token_service(&state, req).await;
    }
    let is_pull = matches!(*req.method(), Method::GET | Method::HEAD);
    let Some(r) = route(&path) else {
        if !allowed(&state, &req, !is_pull) {
            return unauthorized(&state, &req, None);
        }
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no such endpoint");
    };
    let name = match &r {
        Route::Ping => "",
        Route::Tags(n)
        | Route::Uploads(n, _)
        | Route::Blob(n, _)
        | Route::Manifest(n, _)
        | Route::Referrers(n, _) => n,
    };
    let permitted = if matches!(r, Route::Ping) {
        ping_allowed(&state, &req)
    } else {
        allowed(&state, &req, !is_pull)
    };
    if !permitted {
        let scope = (!name.is_empty() && validate_repo_name(name).is_ok()).then(|| {
            let actions = if is_pull { "pull" } else { "pull,push" };
            format!("repository:{name}:{actions}")
        });
        return unauthorized(&state, &req, scope);
    }
    if !matches!(r, Route::Ping)
        && let Err(e) = validate_repo_name(name)
    {
        return store_error(&e);
    }
    let name = name.to_string();
    let res = match r {
        Route::Ping => Ok(ping(&req)),
        Route::Tags(_) if req.method() == Method::GET => tags_list(&state, &req, name).await,
        Route::Blob(_, d) => {
            let d = d.to_string();
            match *req.method() {
                Method::GET | Method::HEAD => get_blob(&state, &req, d).await,
                Method::DELETE => delete_blob(&state, d).await,
                _ => Err(unsupported()),
            }
        }
        Route::Uploads(_, id) => {
            let id = id.to_string();
            match (req.method().clone(), id.is_empty()) {
                (Method::POST, true) => post_upload(&state, req, name).await,
                (Method::PATCH, false) => patch_upload(&state, req, name, id).await,
                (Method::PUT, false) => put_upload(&state, req, name, id).await,
                (Method::GET, false) => match upload_algorithm(&req) {
                    Ok(alg) => upload_status(&state, name, id, alg).await,
                    Err(r) => Err(r),
                },
                (Method::DELETE, false) => {
                    let s = state.store.clone();
                    blocking(move || s.cancel_upload(&id))
                        .await
                        .map(|_| empty(StatusCode::NO_CONTENT))
                }
                _ => Err(unsupported()),
            }
        }
        Route::Manifest(_, reference) => {
            let reference = reference.to_string();
            match *req.method() {
                Method::GET | Method::HEAD => get_manifest(&state, &req, name, reference).await,
                Method::PUT => put_manifest(&state, req, name, reference).await,
                Method::DELETE => delete_manifest(&state, name, reference).await,
                _ => Err(unsupported()),
            }
        }
        Route::Referrers(_, d) if req.method() == Method::GET => {
            referrers(&state, &req, name, d.to_string()).await
        }
        _ => Err(unsupported()),
    };
    res.unwrap_or_else(|e| e)
}

fn unsupported() -> Resp {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "method not supported here",
    )
}

fn ping(_req: &Request<Incoming>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
    set(&mut r, "content-type", "application/json");
    set(&mut r, "docker-distribution-api-version", "registry/2.0");
    r
}

fn parse_digest(s: &str) -> Result<Digest, Resp> {
    s.parse::<Digest>().map_err(|e| store_error(&e))
}

async fn get_blob(state: &State, req: &Request<Incoming>, d: String) -> Result<Resp, Resp> {
    let d = parse_digest(&d)?;
    let s = state.store.clone();
    let dd = d.clone();
    let len = blocking(move || {
        s.blob_size(&dd)
            .ok_or_else(|| StoreError::BlobUnknown(dd.to_string()))
    })
    .await?;
    let head = req.method() == Method::HEAD;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(r) => {
            let parsed = r.strip_prefix("bytes=").and_then(|spec| {
                let (a, b) = spec.split_once('-')?;
                let a: u64 = a.trim().parse().ok()?;
                let b: u64 = if b.trim().is_empty() {
                    len.checked_sub(1)?
                } else {
                    b.trim().parse::<u64>().ok()?.min(len.checked_sub(1)?)
                };
                (a <= b && a < len).then_some((a, b + 1))
            });
            match parsed {
                Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
                None => {
                    let mut r = error(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "BLOB_UNKNOWN",
                        "unsatisfiable range",
                    );
                    set(&mut r, "content-range", &format!("bytes */{len}"));
                    return Err(r);
                }
            }
        }
    };
    // Only what is asked for is read: a HEAD reads nothing, a range only its bytes.
    let body = if head {
        Bytes::new()
    } else {
        let s = state.store.clone();
        let dd = d.clone();
        Bytes::from(blocking(move || s.read_blob_range(&dd, start, end - start)).await?)
    };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    set(&mut r, "content-type", "application/octet-stream");
    set(&mut r, "content-length", &(end - start).to_string());
    set(&mut r, "docker-content-digest", &d.to_string());
    set(&mut r, "accept-ranges", "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut r,
            "content-range",
            &format!("bytes {start}-{}/{len}", end - 1),
        );
    }
    Ok(r)
}

async fn delete_blob(state: &State, d: String) -> Result<Resp, Resp> {
    let d = parse_digest(&d)?;
    let s = state.store.clone();
    blocking(move || s.delete_blob(&d)).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

fn blob_created(name: &str, d: &Digest) -> Resp {
    let mut r = empty(StatusCode::CREATED);
    set(&mut r, "location", &format!("/v2/{name}/blobs/{d}"));
    set(&mut r, "docker-content-digest", &d.to_string());
    r
}

/// The `digest-algorithm` an upload was opened with (carried in its location), checked.
fn upload_algorithm(req: &Request<Incoming>) -> Result<Option<String>, Resp> {
    match query_param(req, "digest-algorithm") {
        None => Ok(None),
        Some(a) if a == "sha256" || a == "sha512" => Ok(Some(a)),
        Some(a) => Err(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!(
                "unsupported digest-algorithm {:?}: sha256 or sha512",
                a.chars().take(50).collect::<String>()
            ),
        )),
    }
}

fn upload_accepted(status: StatusCode, name: &str, id: &str, size: u64, alg: Option<&str>) -> Resp {
    let mut r = empty(status);
    let query = alg
        .map(|a| format!("?digest-algorithm={a}"))
        .unwrap_or_default();
    set(
        &mut r,
        "location",
        &format!("/v2/{name}/blobs/uploads/{id}{query}"),
    );
    set(&mut r, "docker-upload-uuid", id);
    set(&mut r, "range", &format!("0-{}", size.saturating_sub(1)));
    r
}

async fn post_upload(state: &State, req: Request<Incoming>, name: String) -> Result<Resp, Resp> {
    let alg = upload_algorithm(&req)?;
    if let Some(m) = query_param(&req, "mount") {
        let d = parse_digest(&m)?;
        // `from` is optional (any repository may mount a blob the store holds), but if given it
        // must be a valid name.
        if let Some(from) = query_param(&req, "from") {
            validate_repo_name(&from).map_err(|e| store_error(&e))?;
        }
        if state.store.blob_size(&d).is_some() {
            return Ok(blob_created(&name, &d));
        }
    } else if let Some(dg) = query_param(&req, "digest") {
        let d = parse_digest(&dg)?;
        let body = read_body(req, MAX_BLOB_BODY).await?;
        let s = state.store.clone();
        let dd = d.clone();
        blocking(move || s.put_blob(&dd, &body)).await?;
        return Ok(blob_created(&name, &d));
    }
    let s = state.store.clone();
    let id = blocking(move || s.start_upload()).await?;
    Ok(upload_accepted(
        StatusCode::ACCEPTED,
        &name,
        &id,
        0,
        alg.as_deref(),
    ))
}

async fn patch_upload(
    state: &State,
    req: Request<Incoming>,
    name: String,
    id: String,
) -> Result<Resp, Resp> {
    let alg = upload_algorithm(&req)?;
    let range = content_range(&req)?;
    let body = read_body(req, MAX_BLOB_BODY).await?;
    let offset = chunk_offset(range, &body)?;
    let s = state.store.clone();
    let id2 = id.clone();
    let size = blocking(move || s.append_upload(&id2, offset, &body)).await?;
    Ok(upload_accepted(
        StatusCode::ACCEPTED,
        &name,
        &id,
        size,
        alg.as_deref(),
    ))
}

/// A chunk's `Content-Range` (`a-b`, inclusive), if it names one.
fn content_range(req: &Request<Incoming>) -> Result<Option<(u64, u64)>, Resp> {
    let Some(v) = req.headers().get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let parsed = v.to_str().ok().and_then(|s| {
        let s = s
            .trim()
            .trim_start_matches("bytes ")
            .trim_start_matches("bytes=");
        let (a, b) = s.split_once('-')?;
        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
    });
    match parsed {
        Some((a, b)) if a <= b => Ok(Some((a, b))),
        _ => Err(error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            "bad Content-Range",
        )),
    }
}

/// Where a chunk with `range` must start, checked against its body's length.
fn chunk_offset(range: Option<(u64, u64)>, body: &[u8]) -> Result<Option<u64>, Resp> {
    match range {
        None => Ok(None),
        Some((a, b)) if (b - a).checked_add(1) == Some(body.len() as u64) => Ok(Some(a)),
        Some(_) => Err(error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            "Content-Range does not match the body length",
        )),
    }
}

async fn put_upload(
    state: &State,
    req: Request<Incoming>,
    name: String,
    id: String,
) -> Result<Resp, Resp> {
    let Some(dg) = query_param(&req, "digest") else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "missing digest query parameter",
        ));
    };
    let d = parse_digest(&dg)?;
    if let Some(alg) = upload_algorithm(&req)?
        && alg != d.algorithm().name()
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!("the upload was opened for {alg}, the digest is {d}"),
        ));
    }
    // A last chunk out of order is refused (416) and the upload stays open, as for PATCH.
    let range = content_range(&req)?;
    let body = read_body(req, MAX_BLOB_BODY).await?;
    let offset = chunk_offset(range, &body)?;
    let s = state.store.clone();
    let dd = d.clone();
    blocking(move || s.finish_upload(&id, &dd, offset, &body)).await?;
    Ok(blob_created(&name, &d))
}

async fn upload_status(
    state: &State,
    name: String,
    id: String,
    alg: Option<String>,
) -> Result<Resp, Resp> {
    let s = state.store.clone();
    let id2 = id.clone();
    let size = blocking(move || s.upload_size(&id2)).await?;
    Ok(upload_accepted(
        StatusCode::NO_CONTENT,
        &name,
        &id,
        size,
        alg.as_deref(),
    ))
}

async fn get_manifest(
    state: &State,
    req: &Request<Incoming>,
    name: String,
    reference: String,
) -> Result<Resp, Resp> {
    let reference: Reference = reference.parse().map_err(|e| store_error(&e))?;
    let s = state.store.clone();
    let m = blocking(move || s.get_manifest(&name, &reference)).await?;
    let len = m.bytes.len();
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(m.bytes)
    };
    let mut r = Response::new(Full::new(body));
    set(&mut r, "content-type", &m.media_type);
    set(&mut r, "content-length", &len.to_string());
    set(&mut r, "docker-content-digest", &m.digest.to_string());
    Ok(r)
}

async fn put_manifest(
    state: &State,
    req: Request<Incoming>,
    name: String,
    reference: String,
) -> Result<Resp, Resp> {
    let reference: Reference = reference.parse().map_err(|e| store_error(&e))?;
    let tags = query_params(&req, "tag");
    if !tags.is_empty() {
        if !matches!(reference, Reference::Digest(_)) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                "tag parameters go with a push by digest",
            ));
        }
        if tags.len() > MAX_TAGS_PER_PUT {
            return Err(error(
                StatusCode::URI_TOO_LONG,
                "MANIFEST_INVALID",
                &format!("at most {MAX_TAGS_PER_PUT} tags per request"),
            ));
        }
        for t in &tags {
            validate_tag(t).map_err(|e| store_error(&e))?;
        }
    }
    let header_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
    let body = read_body(req, MAX_MANIFEST).await?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            &format!("manifest is not JSON: {e}"),
        )
    })?;
    let media_type = json
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or(header_type)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                "no mediaType in manifest or Content-Type",
            )
        })?;
    for d in referenced_digests(&body) {
        if state.store.blob_size(&d).is_none() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_BLOB_UNKNOWN",
                &format!("referenced blob {d} is not in the registry"),
            ));
        }
    }
    let subject = json
        .get("subject")
        .and_then(|s| s.get("digest"))
        .and_then(|d| d.as_str())
        .and_then(|d| d.parse::<Digest>().ok());
    let s = state.store.clone();
    let n = name.clone();
    let tagged = tags.clone();
    let digest = blocking(move || {
        let d = s.put_manifest(&n, &reference, &media_type, &body)?;
        for t in &tagged {
            s.set_tag(&n, t, &d)?;
        }
        Ok(d)
    })
    .await?;
    let mut r = empty(StatusCode::CREATED);
    if !tags.is_empty() {
        set(&mut r, "oci-tag", &tags.join(", "));
    }
    set(
        &mut r,
        "location",
        &format!("/v2/{name}/manifests/{digest}"),
    );
    set(&mut r, "docker-content-digest", &digest.to_string());
    if let Some(sub) = subject {
        set(&mut r, "oci-subject", &sub.to_string());
    }
    Ok(r)
}

async fn delete_manifest(state: &State, name: String, reference: String) -> Result<Resp, Resp> {
    let reference: Reference = reference.parse().map_err(|e| store_error(&e))?;
    let s = state.store.clone();
    blocking(move || match reference {
        Reference::Digest(d) => s.delete_manifest(&name, &d),
        Reference::Tag(t) => s.delete_tag(&name, &t),
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn tags_list(state: &State, req: &Request<Incoming>, name: String) -> Result<Resp, Resp> {
    let n: Option<usize> = match query_param(req, "n") {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                "bad n",
            )
        })?),
    };
    let last = query_param(req, "last");
    let s = state.store.clone();
    let n2 = name.clone();
    let (exists, tags) = blocking(move || Ok((s.repo_exists(&n2)?, s.list_tags(&n2)?))).await?;
    if !exists {
        return Err(error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository unknown",
        ));
    }
    let mut tags: Vec<String> = tags
        .into_iter()
        .filter(|t| last.as_ref().is_none_or(|l| t.as_str() > l.as_str()))
        .collect();
    let mut link = None;
    if let Some(n) = n
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(l) = tags.last() {
            link = Some(format!(
                "</v2/{name}/tags/list?n={n}&last={l}>; rel=\"next\""
            ));
        }
    }
    let body = serde_json::json!({"name": name, "tags": tags}).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    set(&mut r, "content-type", "application/json");
    if let Some(l) = link {
        set(&mut r, "link", &l);
    }
    Ok(r)
}

async fn referrers(
    state: &State,
    req: &Request<Incoming>,
    name: String,
    d: String,
) -> Result<Resp, Resp> {
    let subject = parse_digest(&d)?;
    let filter = query_param(req, "artifactType");
    let s = state.store.clone();
    let f = filter.clone();
    let manifests = blocking(move || {
        let mut out = Vec::new();
        if !s.repo_exists(&name)? {
            return Ok(out);
        }
        for md in s.list_manifests(&name)? {
            let Ok(bytes) = s.read_blob(&md) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let sub = v
                .get("subject")
                .and_then(|x| x.get("digest"))
                .and_then(|x| x.as_str());
            if sub != Some(subject.to_string().as_str()) {
                continue;
            }
            let artifact_type = v
                .get("artifactType")
                .or_else(|| v.get("config").and_then(|c| c.get("mediaType")))
                .and_then(|x| x.as_str())
                .map(str::to_string);
            if let Some(f) = &f
                && artifact_type.as_deref() != Some(f.as_str())
            {
                continue;
            }
            let media_type = v
                .get("mediaType")
                .and_then(|x| x.as_str())
                .unwrap_or("application/vnd.oci.image.manifest.v1+json");
            let mut desc = serde_json::json!({
                "mediaType": media_type,
                "digest": md.to_string(),
                "size": bytes.len(),
            });
            if let Some(at) = artifact_type {
                desc["artifactType"] = serde_json::Value::String(at);
            }
            if let Some(a) = v.get("annotations") {
                desc["annotations"] = a.clone();
            }
            out.push(desc);
        }
        Ok(out)
    })
    .await?;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    })
    .to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    set(&mut r, "content-type", INDEX_MEDIA_TYPE);
    if filter.is_some() {
        set(&mut r, "oci-filters-applied", "artifactType");
    }
    Ok(r)
}
