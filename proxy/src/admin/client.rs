//! The `wasmesh chain` commands: a running proxy's filter chains changed and shown through its
//! admin API, so the user loop is `wasmesh filter push` → `wasmesh chain set` → live.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the admin API at {addr}: {cause}")]
    Connect { addr: SocketAddr, cause: String },
    #[error("{method} {path}: {status}: {body}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{path}: unexpected answer: {cause}")]
    Answer { path: String, cause: String },
}

/// One plugin given on the command line.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub source: String,
    pub name: Option<String>,
    /// JSON text, or any other text passed to the filter as is.
    pub config: Option<String>,
}

/// Settings every plugin of a `chain set` gets.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    pub follow: bool,
    pub poll_interval: Option<String>,
    pub failure_policy: Option<String>,
}

const TIMEOUT: Duration = Duration::from_secs(60);

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Value, AdminError> {
    let connect = |cause: String| AdminError::Connect { addr, cause };
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| connect(e.to_string()))?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/yaml")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| connect(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| connect(e.to_string()))?
            .to_bytes();
        Ok::<_, AdminError>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| connect(format!("no answer within {TIMEOUT:?}")))??;
    if !status.is_success() {
        return Err(AdminError::Refused {
            method,
            path: path.to_string(),
            status,
            body: String::from_utf8_lossy(&bytes).trim_end().to_string(),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| AdminError::Answer {
        path: path.to_string(),
        cause: e.to_string(),
    })
}

/// The name a plugin gets when none is given: the repository's last segment (`filters/auth:v1`
/// → `auth`) or the file's stem.
fn default_name(source: &str) -> String {
    let tail = source.rsplit('/').next().unwrap_or(source);
    let tail = tail.split(['@', ':']).next().unwrap_or(tail);
    let tail = tail.strip_suffix(".wasm").unwrap_or(tail);
    if tail.is_empty() {
        "plugin".to_string()
    } else {
        tail.to_string()
    }
}

/// The chain document `PUT /chains/{name}` takes.
pub fn chain_document(plugins: &[PluginSpec], options: &PluginOptions) -> Value {
    let mut taken: Vec<String> = Vec::new();
    let plugins: Vec<Value> = plugins
        .iter()
        .map(|p| {
            let base = p.name.clone().unwrap_or_else(|| default_name(&p.source));
            let mut name = base.clone();
            let mut n = 2;
            while taken.contains(&name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            taken.push(name.clone());
            let mut plugin = serde_json::json!({ "name": name, "source": p.source });
            if let Some(config) = &p.config {
                plugin["config"] =
                    serde_json::from_str(config).unwrap_or_else(|_| Value::String(config.clone()));
            }
            if options.follow {
                plugin["follow"] = Value::Bool(true);
            }
            if let Some(interval) = &options.poll_interval {
                plugin["poll_interval"] = Value::String(interval.clone());
            }
            if let Some(policy) = &options.failure_policy {
                plugin["failure_policy"] = Value::String(policy.clone());
            }
            plugin
        })
        .collect();
    serde_json::json!({ "plugins": plugins })
}

/// `wasmesh chain set`: replaces chain `name` on the proxy at `admin`; prints the new
/// generation and what the chain runs now.
pub async fn set(
    admin: SocketAddr,
    name: &str,
    plugins: &[PluginSpec],
    options: &PluginOptions,
) -> Result<(), AdminError> {
    let document = chain_document(plugins, options);
    let answer = call(
        admin,
        Method::PUT,
        &format!("/chains/{name}"),
        Some(document.to_string()),
    )
    .await?;
    println!(
        "chain {name}: generation {}",
        answer.get("generation").unwrap_or(&Value::Null)
    );
    let chain = call(admin, Method::GET, &format!("/chains/{name}"), None).await?;
    print_chain(&chain);
    Ok(())
}

/// `wasmesh chain rollback`: puts back the chain's previous definition.
pub async fn rollback(admin: SocketAddr, name: &str) -> Result<(), AdminError> {
    let answer = call(
        admin,
        Method::POST,
        &format!("/chains/{name}/rollback"),
        None,
    )
    .await?;
    println!(
        "chain {name}: rolled back, generation {}",
        answer.get("generation").unwrap_or(&Value::Null)
    );
    let chain = call(admin, Method::GET, &format!("/chains/{name}"), None).await?;
    print_chain(&chain);
    Ok(())
}

/// `wasmesh chain status`: the running generation, the latest reload's outcome, and every
/// chain (or one) with its plugins.
pub async fn status(admin: SocketAddr, name: Option<&str>) -> Result<(), AdminError> {
    let status = call(admin, Method::GET, "/config/status", None).await?;
    let text = |key: &str| match status.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    println!(
        "generation {} (applied {}, rejected {}); last trigger: {}",
        text("generation"),
        text("applied"),
        text("rejected"),
        text("last_trigger")
    );
    if let Some(Value::String(error)) = status.get("last_error") {
        println!("last error: {error}");
    }
    if let Some(Value::Array(warnings)) = status.get("last_warnings") {
        for warning in warnings.iter().filter_map(Value::as_str) {
            println!("warning: {warning}");
        }
    }
    match name {
        Some(name) => {
            let chain = call(admin, Method::GET, &format!("/chains/{name}"), None).await?;
            print_chain(&chain);
        }
        None => {
            let all = call(admin, Method::GET, "/chains", None).await?;
            for chain in all
                .get("chains")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                print_chain(chain);
            }
        }
    }
    Ok(())
}

fn print_chain(chain: &Value) {
    let field = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string()
    };
    print!("chain {}", field(chain, "name"));
    match chain.get("blocked").and_then(Value::as_str) {
        Some(reason) => println!(" (blocked: {reason})"),
        None => println!(),
    }
    for plugin in chain
        .get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let state = field(plugin, "state");
        let detail = if state == "loaded" {
            let digest = plugin
                .get("manifest_digest")
                .and_then(Value::as_str)
                .or_else(|| plugin.get("sha256").and_then(Value::as_str))
                .unwrap_or("-");
            format!(
                "{digest}, {} bytes",
                plugin.get("size").unwrap_or(&Value::Null)
            )
        } else {
            field(plugin, "error")
        };
        println!(
            "  {:<16} {:<11} {}  ({detail})",
            field(plugin, "name"),
            state,
            field(plugin, "source"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_come_from_sources_and_stay_unique() {
        let spec = |source: &str| PluginSpec {
            source: source.into(),
            name: None,
            config: None,
        };
        let doc = chain_document(
            &[
                spec("oci://127.0.0.1:5000/filters/auth:v1"),
                spec("oci://r.example/auth@sha256:00"),
                spec("file:///tmp/stamp.wasm"),
            ],
            &PluginOptions {
                follow: true,
                poll_interval: Some("1s".into()),
                failure_policy: None,
            },
        );
        let names: Vec<&str> = doc["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["auth", "auth-2", "stamp"]);
        assert_eq!(doc["plugins"][0]["follow"], Value::Bool(true));
        assert_eq!(doc["plugins"][0]["poll_interval"], "1s");
    }

    #[test]
    fn config_is_json_when_it_parses() {
        let doc = chain_document(
            &[
                PluginSpec {
                    source: "file:///a.wasm".into(),
                    name: Some("a".into()),
                    config: Some(r#"{"x": 1}"#.into()),
                },
                PluginSpec {
                    source: "file:///b.wasm".into(),
                    name: Some("b".into()),
                    config: Some("plain words".into()),
                },
            ],
            &PluginOptions {
                follow: false,
                poll_interval: None,
                failure_policy: None,
            },
        );
        assert_eq!(doc["plugins"][0]["config"]["x"], 1);
        assert_eq!(doc["plugins"][1]["config"], "plain words");
        assert!(doc["plugins"][1].get("follow").is_none());
    }
}
