//! The proxy environment: `wasmesh_proxy::server::Server` started in process on a generated
//! configuration (one worker; the probe loaded from `file://`), reached by real clients on
//! loopback, with real upstreams behind it.

use std::net::SocketAddr;

use wasmesh_proxy::server::Server;

use crate::error::{Context, Error, Result};
use crate::net::client::{self, Body, Reply};

/// A running proxy.
pub struct Proxy {
    server: Server,
    pub admin: SocketAddr,
}

/// The `root_id` every probe plugin gets.
pub const ROOT_ID: &str = "conformance-root";

/// One plugin entry for `filter_chains[].plugins`: `name` running `wasm` with the string
/// `config` in `vm_id`, root id [`ROOT_ID`].
pub fn plugin(name: &str, wasm: &str, config: &str, vm_id: &str) -> String {
    // A JSON string is a valid YAML double-quoted string.
    let quoted = serde_json::Value::String(config.to_string()).to_string();
    format!(
        "      - name: {name}\n        source: \"file://{wasm}\"\n        config: {quoted}\n        vm_id: \"{vm_id}\"\n        root_id: \"{ROOT_ID}\"\n        deadline: 1s\n"
    )
}

/// A configuration with listener `main` (HTTP, filter chain `probe` made of `plugins`) in front
/// of cluster `backend` at `upstream`; `routes` go before the default route, `clusters` after
/// `backend`, `listeners` after `main` (each already indented as YAML list items).
pub fn config(
    upstream: SocketAddr,
    plugins: &str,
    routes: &str,
    clusters: &str,
    listeners: &str,
) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "127.0.0.1:0"
    route_config: main
    filter_chain: probe
{listeners}
routes:
  - name: main
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
{routes}
          - name: default
            match: {{ prefix: "/" }}
            cluster: backend
clusters:
  - name: backend
    endpoints: ["{upstream}"]
{clusters}
filter_chains:
  - name: probe
    plugins:
{plugins}
admin:
  address: "127.0.0.1:0"
drain_timeout: 1s
"#
    )
}

impl Proxy {
    /// Starts a proxy on `yaml` with one worker.
    pub async fn start(yaml: &str) -> Result<Proxy> {
        let config = wasmesh_proxy::config::load_str(yaml, "conformance.yaml")
            .doing("the generated proxy configuration")?;
        let server = Server::start_with(config, 1)
            .await
            .doing("starting the proxy")?;
        let admin = server.admin_addr().doing("the proxy's admin address")?;
        Ok(Proxy { server, admin })
    }

    /// Starts a proxy on `yaml` expecting it to refuse; returns the error's text.
    pub async fn refused(yaml: &str) -> Result<String> {
        let config = wasmesh_proxy::config::load_str(yaml, "conformance.yaml")
            .doing("the generated proxy configuration")?;
        match Server::start_with(config, 1).await {
            Ok(server) => {
                server.shutdown().await;
                Err(Error(
                    "the proxy started on a configuration it should refuse".into(),
                ))
            }
            Err(err) => Ok(err.to_string()),
        }
    }

    /// Starts a proxy on `yaml`, runs `body` with it, and stops it whatever `body` returned.
    pub async fn with<T>(yaml: &str, body: impl AsyncFnOnce(&Proxy) -> Result<T>) -> Result<T> {
        let proxy = Proxy::start(yaml).await?;
        let result = body(&proxy).await;
        proxy.stop().await;
        result
    }

    pub async fn stop(self) {
        self.server.shutdown().await;
    }

    pub fn listener(&self, name: &str) -> Result<SocketAddr> {
        self.server
            .listener_addr(name)
            .doing(&format!("the address of listener {name}"))
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Sends a request to listener `main` over HTTP/1.1 (`h2`: h2c).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body,
        h2: bool,
    ) -> Result<Reply> {
        let req = client::request(method, path, headers, body)?;
        client::send(self.listener("main")?, req, h2).await
    }

    /// GETs `path` on listener `main` with `headers`, over HTTP/1.1.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        self.send("GET", path, headers, client::empty(), false)
            .await
    }

    /// The admin API's answer to `GET path`.
    pub async fn admin_get(&self, path: &str) -> Result<String> {
        client::get_text(self.admin, path).await
    }

    /// The ABI version the admin API reports for plugin `plugin` of chain `chain`, as
    /// `0.2.1`.
    pub async fn abi_version(&self, chain: &str, plugin: &str) -> Result<String> {
        let text = self.admin_get(&format!("/chains/{chain}")).await?;
        let json: serde_json::Value = serde_json::from_str(&text).doing("the admin API's chain")?;
        let version = json["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == plugin)
            .and_then(|p| p["abi_version"].as_str())
            .doing(&format!("plugin {plugin} in /chains/{chain}"))?;
        Ok(version.trim_start_matches('V').replace('_', "."))
    }

    /// Replaces chain `name` with the plugins in `plugins` (YAML list items).
    pub async fn set_chain(&self, name: &str, plugins: &str) -> Result<()> {
        let text = if plugins.trim().is_empty() {
            "plugins: []\n".to_string()
        } else {
            format!("plugins:\n{plugins}")
        };
        let chain = wasmesh_proxy::config::load_chain_str(&text, name, "conformance-chain.yaml")
            .doing("the replacement chain")?;
        self.server
            .control()
            .set_chain(chain)
            .await
            .doing("replacing a chain")?;
        Ok(())
    }
}
