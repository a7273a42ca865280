//! Client credentials and the registry auth handshake pieces:
//! - [`Credentials`]: none, a static token (sent as `Bearer`), or Docker's `config.json`
//!   (`auths.<host>.auth` as Basic user:password, `identitytoken` as an OAuth2 refresh token,
//!   `registrytoken` as Bearer);
//! - `WWW-Authenticate` challenge parsing;
//! - the token-service realm check (SSRF guard, as Istio's fetcher does): only `http(s)` realms,
//!   never a link-local or cloud-metadata address, a loopback realm only for a loopback registry,
//!   and credentials never sent in clear to a realm not allowed plain HTTP;
//! - a cache of service tokens per (registry, scope) until they expire.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use crate::client::ClientError;
use crate::reference::{is_loopback, is_metadata_or_link_local};

/// Who the client says it is to registries.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// Anonymous; a registry's token service may still hand out an anonymous token.
    #[default]
    None,
    /// Sent as `Authorization: Bearer <token>` to every registry (the wasmesh registry takes its
    /// push or pull token this way).
    Token(String),
    /// Per-registry entries from a Docker `config.json`.
    DockerConfig(DockerConfig),
}

impl Credentials {
    /// The usual way to pick credentials: `token` when given (e.g. `WASMESH_REGISTRY_TOKEN`),
    /// else the Docker config at `auth_file` (an error if unreadable), else the default Docker
    /// config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) when it exists and
    /// parses (a broken default file is logged and skipped), else none.
    pub fn load(
        auth_file: Option<&Path>,
        token: Option<String>,
    ) -> Result<Credentials, ClientError> {
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            return Ok(Credentials::Token(t));
        }
        if let Some(path) = auth_file {
            return Ok(Credentials::DockerConfig(DockerConfig::load(path)?));
        }
        match DockerConfig::default_path() {
            Some(path) if path.is_file() => match DockerConfig::load(&path) {
                Ok(c) => Ok(Credentials::DockerConfig(c)),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring the default Docker config");
                    Ok(Credentials::None)
                }
            },
            _ => Ok(Credentials::None),
        }
    }
}

/// One registry's entry in a Docker `config.json`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthEntry {
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity_token: Option<String>,
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for AuthEntry {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEntry")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("identity_token", &self.identity_token.as_ref().map(|_| "…"))
            .field("registry_token", &self.registry_token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl AuthEntry {
    /// `Basic` credentials, when the entry has a user name and password.
    pub fn basic(&self) -> Option<String> {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some(BASE64.encode(format!("{u}:{p}"))),
            _ => None,
        }
    }
}

/// The `auths` of a Docker `config.json`, keyed by registry host (`host[:port]`). Credential
/// helpers (`credsStore`, `credHelpers`) are not run.
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    pub auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// `https://index.docker.io/v1/`, `http://h:5000`, `h:5000/` → `index.docker.io`, `h:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    k.to_ascii_lowercase()
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
    }

    pub fn load(path: &Path) -> Result<DockerConfig, ClientError> {
        let bytes = std::fs::read(path).map_err(|e| {
            ClientError::Config(format!("cannot read Docker config {}: {e}", path.display()))
        })?;
        DockerConfig::parse(&bytes)
            .map_err(|e| ClientError::Config(format!("Docker config {}: {e}", path.display())))
    }

    /// Parses `config.json` text; an entry's `auth` (base64 `user:password`) wins over
    /// separate `username`/`password` fields.
    pub fn parse(bytes: &[u8]) -> Result<DockerConfig, String> {
        let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut auths = HashMap::new();
        for (key, raw) in file.auths {
            let mut entry = AuthEntry {
                username: raw.username,
                password: raw.password,
                identity_token: raw.identitytoken.filter(|t| !t.is_empty()),
                registry_token: raw.registrytoken.filter(|t| !t.is_empty()),
            };
            if let Some(auth) = raw.auth.filter(|a| !a.is_empty()) {
                let decoded = BASE64
                    .decode(auth.trim())
                    .map_err(|e| format!("auths.{key:?}.auth is not base64: {e}"))?;
                let text = String::from_utf8(decoded)
                    .map_err(|_| format!("auths.{key:?}.auth is not UTF-8"))?;
                let (u, p) = text
                    .split_once(':')
                    .ok_or_else(|| format!("auths.{key:?}.auth is not user:password"))?;
                entry.username = Some(u.to_string());
                entry.password = Some(p.to_string());
            }
            auths.insert(normalize_key(&key), entry);
        }
        Ok(DockerConfig { auths })
    }

    /// The entry for `host` (`host[:port]`); Docker Hub's entries also answer for its aliases.
    pub fn entry(&self, host: &str) -> Option<&AuthEntry> {
        let host = host.to_ascii_lowercase();
        self.auths.get(&host).or_else(|| {
            matches!(
                host.as_str(),
                "docker.io" | "registry-1.docker.io" | "index.docker.io"
            )
            .then(|| {
                ["index.docker.io", "docker.io", "registry-1.docker.io"]
                    .iter()
                    .find_map(|k| self.auths.get(*k))
            })
            .flatten()
        })
    }
}

/// One `WWW-Authenticate` challenge: its scheme (lower-cased) and parameters (keys lower-cased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses every challenge in the given `WWW-Authenticate` values (RFC 9110 §11.6.1: several
/// challenges may share one header, separated by commas, and quoted values may hold commas).
pub fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values {
        let mut rest = value.trim();
        let mut current: Option<Challenge> = None;
        while !rest.is_empty() {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if rest.is_empty() {
                break;
            }
            let end = rest
                .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            if end == 0 {
                // A stray `=` where a name should be: skip it. (Taking it as an empty scheme
                // name would consume nothing and loop forever — found by fuzzing.)
                rest = &rest[1..];
                continue;
            }
            let token = &rest[..end];
            let after = rest[end..].trim_start_matches([' ', '\t']);
            if let Some(v) = after.strip_prefix('=').filter(|_| current.is_some()) {
                // key=value
                let v = v.trim_start();
                let (value, remaining) = if let Some(q) = v.strip_prefix('"') {
                    let mut value = String::new();
                    let mut chars = q.char_indices();
                    let mut consumed = q.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, n)) = chars.next() {
                                    value.push(n);
                                }
                            }
                            '"' => {
                                consumed = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    (value, &q[consumed..])
                } else {
                    let e = v.find(',').unwrap_or(v.len());
                    (v[..e].trim().to_string(), &v[e..])
                };
                if let Some(c) = current.as_mut() {
                    c.params.insert(token.to_ascii_lowercase(), value);
                }
                rest = remaining;
            } else {
                // A new challenge (a scheme name).
                if let Some(c) = current.take() {
                    out.push(c);
                }
                current = Some(Challenge {
                    scheme: token.to_ascii_lowercase(),
                    params: BTreeMap::new(),
                });
                rest = &rest[end..];
            }
        }
        if let Some(c) = current {
            out.push(c);
        }
    }
    out
}

/// Checks a token-service realm before any request (let alone credentials) goes to it.
/// `registry` is the registry's `host[:port]`; `plain_allowed` says which hosts may be reached
/// over plain HTTP. Returns the realm's URI.
pub fn check_realm(
    realm: &str,
    registry: &str,
    plain_allowed: impl Fn(&str) -> bool,
) -> Result<http::Uri, ClientError> {
    let refuse = |reason: &str| ClientError::Realm {
        realm: realm.chars().take(200).collect(),
        reason: reason.to_string(),
    };
    let scheme = realm
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(refuse("only http and https realms are allowed"));
    }
    let uri: http::Uri = realm.parse().map_err(|_| refuse("not a URL"))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| refuse("no host"))?;
    if authority.contains('@') {
        return Err(refuse("user information in the URL"));
    }
    if is_metadata_or_link_local(&authority) {
        return Err(refuse(
            "link-local or cloud-metadata address (server-side request forgery guard)",
        ));
    }
    if is_loopback(&authority) && !is_loopback(registry) {
        return Err(refuse(
            "loopback realm for a registry that is not on loopback (server-side request forgery guard)",
        ));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if plain_allowed(&authority) => {}
        Some("http") => {
            return Err(refuse(
                "plain-HTTP realm for a host not allowed plain HTTP (credentials would travel in clear)",
            ));
        }
        _ => return Err(refuse("only http and https realms are allowed")),
    }
    Ok(uri)
}

/// A token service's answer (the Docker token spec and OAuth2 spellings).
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// Token lifetime when the service gives none (the Docker token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this long before they expire, so one is not used as it runs out.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// Bound on cached tokens (they are per registry and repository).
const MAX_CACHED_TOKENS: usize = 4096;

/// Service tokens per (registry host, scope) until they expire.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, host: &str, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&(host.to_string(), scope.to_string()))
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    pub fn put(&self, host: &str, scope: &str, token: String, expires_in: Option<u64>) {
        let lifetime = expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let until = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_CACHED_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, (_, u)| *u > now);
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert((host.to_string(), scope.to_string()), (token, until));
    }

    pub fn forget(&self, host: &str, scope: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.remove(&(host.to_string(), scope.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_with_commas_in_quotes_and_several_schemes() {
        let c = parse_challenges([
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        ]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["service"], "registry.example");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");

        let c = parse_challenges([
            r#"Basic realm="x y", Bearer realm="https://r/t", error=invalid_token"#,
        ]);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "x y");
        assert_eq!(c[1].params["realm"], "https://r/t");
        assert_eq!(c[1].params["error"], "invalid_token");

        let c = parse_challenges(["Basic", r#"bearer realm="a\"b""#]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].params["realm"], "a\"b");
        assert!(parse_challenges([""]).is_empty());
    }

    /// Found by fuzzing: a `=` where a scheme or parameter name belongs (after a vertical tab,
    /// at the start) made the parser loop forever, growing its list until memory ran out.
    #[test]
    fn a_stray_equals_sign_ends() {
        let c = parse_challenges(["Bearer realm=\"https://r/t\"\u{b}=x", "=", "==,= Basic"]);
        assert_eq!(
            c.first().map(|c| c.params["realm"].as_str()),
            Some("https://r/t")
        );
        assert_eq!(c.last().map(|c| c.scheme.as_str()), Some("basic"), "{c:?}");
    }

    #[test]
    fn realms_are_checked_before_use() {
        let plain = |h: &str| is_loopback(h);
        assert!(
            check_realm(
                "https://auth.docker.io/token",
                "registry-1.docker.io",
                plain
            )
            .is_ok()
        );
        assert!(check_realm("http://127.0.0.1:5000/token", "127.0.0.1:5000", plain).is_ok());
        for (realm, registry) in [
            ("file:///etc/passwd", "r.example"),
            ("gopher://r.example/x", "r.example"),
            ("ftp://r.example/x", "r.example"),
            ("wasmesh", "r.example"),
            ("https://169.254.169.254/latest/meta-data", "r.example"),
            ("https://[fe80::1]/x", "r.example"),
            (
                "https://metadata.google.internal/computeMetadata",
                "r.example",
            ),
            ("https://127.0.0.1/token", "r.example"),
            ("https://localhost/token", "r.example"),
            ("http://auth.example/token", "r.example"),
            ("https://user:pw@auth.example/token", "r.example"),
        ] {
            let err = check_realm(realm, registry, plain).expect_err(realm);
            assert!(matches!(err, ClientError::Realm { .. }), "{realm}: {err}");
        }
    }

    #[test]
    fn docker_config_entries() {
        let text = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": BASE64.encode("hub:pw")},
                "127.0.0.1:5000": {"auth": BASE64.encode("u:p:with:colons")},
                "http://reg.example/": {"identitytoken": "refresh"},
                "plain.example": {"username": "a", "password": "b"},
                "empty.example": {"auth": ""}
            },
            "credsStore": "desktop"
        })
        .to_string();
        let c = DockerConfig::parse(text.as_bytes()).expect("parses");
        let e = c.entry("127.0.0.1:5000").expect("entry");
        assert_eq!(e.username.as_deref(), Some("u"));
        assert_eq!(e.password.as_deref(), Some("p:with:colons"));
        assert_eq!(e.basic(), Some(BASE64.encode("u:p:with:colons")));
        assert_eq!(
            c.entry("registry-1.docker.io")
                .and_then(|e| e.username.clone()),
            Some("hub".into())
        );
        assert_eq!(
            c.entry("REG.example")
                .and_then(|e| e.identity_token.clone()),
            Some("refresh".into())
        );
        assert!(
            c.entry("plain.example")
                .and_then(AuthEntry::basic)
                .is_some()
        );
        assert!(
            c.entry("empty.example")
                .and_then(AuthEntry::basic)
                .is_none()
        );
        assert!(c.entry("other.example").is_none());
        assert!(
            !format!("{e:?}").contains("colons"),
            "secrets stay out of Debug"
        );
        assert!(DockerConfig::parse(br#"{"auths":{"h":{"auth":"!!"}}}"#).is_err());
        assert!(DockerConfig::parse(br#"{"auths":{"h":{"auth":"dXNlcg=="}}}"#).is_err());
    }

    #[test]
    fn token_cache_expiry() {
        let cache = TokenCache::default();
        cache.put("h", "repository:a:pull", "t".into(), Some(300));
        assert_eq!(cache.get("h", "repository:a:pull").as_deref(), Some("t"));
        assert_eq!(cache.get("h", "repository:b:pull"), None);
        // A lifetime inside the safety margin is already expired.
        cache.put("h", "s", "u".into(), Some(1));
        assert_eq!(cache.get("h", "s"), None);
        cache.forget("h", "repository:a:pull");
        assert_eq!(cache.get("h", "repository:a:pull"), None);
    }
}
