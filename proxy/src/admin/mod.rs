//! The admin API, on its own port: `/ready`, `/stats` (Prometheus text), `/config` (the running
//! configuration as JSON; `PUT` a YAML document to replace it), `/config/status` (the running
//! generation and the last reload's outcome), `/clusters` (endpoints with their health), and
//! `/chains` (the loaded filter chains; `PUT /chains/{name}` replaces one chain,
//! `POST /chains/{name}/rollback` puts back its previous definition). [`client`] is the other
//! end, for the `wasmesh chain` commands.

pub mod client;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, ProxyBody};
use crate::config;
use crate::server::Control;

/// Largest configuration accepted by `PUT /config`.
const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Control>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn route(shared: &Arc<Control>, req: Request<Incoming>) -> Response<ProxyBody> {
    if let Some(rest) = req.uri().path().strip_prefix("/chains") {
        let rest = rest.to_string();
        return chains(shared, req, &rest).await;
    }
    match (req.method(), req.uri().path()) {
        (&Method::PUT, "/config") => put_config(shared, req).await,
        (&Method::GET, "/config/status") => match serde_json::to_value(shared.status().await) {
            Ok(value) => json(value),
            Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
        },
        (&Method::GET, "/ready") => {
            if shared.draining.load(Ordering::SeqCst) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
            } else {
                text(StatusCode::OK, "ready\n".into())
            }
        }
        (&Method::GET, "/stats") => match crate::observe::prometheus() {
            Some(handle) => {
                let mut response = text(StatusCode::OK, handle.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics recorder not installed\n".into(),
            ),
        },
        (&Method::GET, "/config") => {
            let snapshot = shared.snapshot.load();
            json(serde_json::json!({
                "generation": snapshot.generation,
                "config": &*snapshot.config,
            }))
        }
        (&Method::GET, "/clusters") => {
            let snapshot = shared.snapshot.load();
            let mut names: Vec<_> = snapshot.clusters.keys().collect();
            names.sort();
            let clusters: Vec<_> = names
                .into_iter()
                .filter_map(|n| snapshot.clusters.get(n))
                .map(|c| c.describe())
                .collect();
            json(serde_json::json!({ "clusters": clusters }))
        }
        (_, "/ready" | "/stats" | "/config" | "/config/status" | "/clusters") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready, /stats, /config, /config/status, /clusters, /chains\n".into(),
        ),
    }
}

/// Applies a whole new configuration; 200 with the new generation, or 400 listing every error
/// (the running configuration stays).
async fn put_config(control: &Arc<Control>, req: Request<Incoming>) -> Response<ProxyBody> {
    let yaml = match read_body(req).await {
        Ok(yaml) => yaml,
        Err(response) => return response,
    };
    let cfg = match config::load_str(&yaml, "<admin PUT /config>") {
        Ok(cfg) => cfg,
        Err(errors) => {
            let message = errors.to_string();
            control.reject(message.clone(), "PUT /config").await;
            return text(StatusCode::BAD_REQUEST, format!("{message}\n"));
        }
    };
    applied(control.apply(cfg, "PUT /config").await)
}

/// The answer to a reload: 200 with the new generation, or 400 with why it was rejected.
fn applied(result: Result<u64, crate::server::StartError>) -> Response<ProxyBody> {
    match result {
        Ok(generation) => json(serde_json::json!({ "generation": generation })),
        Err(err @ crate::server::StartError::NothingToRollBack(_)) => {
            text(StatusCode::CONFLICT, format!("{err}\n"))
        }
        Err(err) => text(StatusCode::BAD_REQUEST, format!("{err}\n")),
    }
}

/// `/chains`, `/chains/{name}`, `/chains/{name}/rollback`.
async fn chains(control: &Arc<Control>, req: Request<Incoming>, rest: &str) -> Response<ProxyBody> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, []) => {
            let snapshot = control.snapshot.load();
            let mut names: Vec<&String> = snapshot.chains.keys().collect();
            names.sort();
            let chains: Vec<_> = names
                .into_iter()
                .filter_map(|n| snapshot.chains.get(n))
                .map(|c| describe_chain(c))
                .collect();
            json(serde_json::json!({ "generation": snapshot.generation, "chains": chains }))
        }
        (&Method::GET, [name]) => match control.snapshot.load().chains.get(*name) {
            Some(chain) => json(describe_chain(chain)),
            None => text(StatusCode::NOT_FOUND, format!("no filter chain {name:?}\n")),
        },
        (&Method::PUT, [name]) => {
            let name = name.to_string();
            let trigger = format!("PUT /chains/{name}");
            let body = match read_body(req).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let chain = match config::load_chain_str(&body, &name, &format!("<admin {trigger}>")) {
                Ok(chain) => chain,
                Err(errors) => {
                    let message = errors.to_string();
                    control.reject(message.clone(), &trigger).await;
                    return text(StatusCode::BAD_REQUEST, format!("{message}\n"));
                }
            };
            applied(control.set_chain(chain).await)
        }
        (&Method::POST, [name, "rollback"]) => applied(control.rollback_chain(name).await),
        (_, [] | [_] | [_, "rollback"]) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn describe_chain(chain: &crate::filter::Chain) -> serde_json::Value {
    use crate::filter::chain::Entry;
    let plugins: Vec<_> = chain
        .entries
        .iter()
        .map(|entry| match entry {
            Entry::Loaded(l) => serde_json::json!({
                "name": l.config.name,
                "source": l.config.source,
                "state": "loaded",
                "manifest_digest": l.manifest_digest,
                "sha256": l.sha256,
                "size": l.size,
                "abi_version": format!("{:?}", l.plugin.abi_version()),
                "follow": l.config.follow,
                "failure_policy": l.config.failure_policy,
            }),
            Entry::Unavailable { config, reason } => serde_json::json!({
                "name": config.name,
                "source": config.source,
                "state": "unavailable",
                "error": reason,
                "follow": config.follow,
                "failure_policy": config.failure_policy,
            }),
        })
        .collect();
    serde_json::json!({ "name": chain.name, "blocked": chain.blocked, "plugins": plugins })
}

/// A request body as UTF-8 text, at most [`MAX_CONFIG_BYTES`].
async fn read_body(req: Request<Incoming>) -> Result<String, Response<ProxyBody>> {
    let body = match http_body_util::Limited::new(req.into_body(), MAX_CONFIG_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return Err(text(StatusCode::PAYLOAD_TOO_LARGE, format!("{err}\n"))),
    };
    String::from_utf8(body.to_vec())
        .map_err(|_| text(StatusCode::BAD_REQUEST, "body is not UTF-8\n".into()))
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(value: serde_json::Value) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    let mut response = Response::new(body::full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
