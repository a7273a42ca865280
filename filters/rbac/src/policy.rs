//! Policies as configured — Envoy's RBAC shape, simplified — and how they match a request. A
//! policy matches when any of its permissions matches the request *and* any of its principals
//! matches who sent it. Permissions and principals are one-key objects (`{"method": "GET"}`),
//! combined with `and`, `or` and `not`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;
use wasmesh_sdk::config::ConfigError;

use crate::facts::Facts;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What a matching policy does.
    pub action: Decision,
    /// Named policies, tried in name order; the first that matches decides.
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    /// Only log and count what would have been decided; let every request through.
    #[serde(default)]
    pub shadow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Decision {
    /// Requests matching a policy are allowed; all others are denied.
    #[serde(rename = "ALLOW")]
    Allow,
    /// Requests matching a policy are denied; all others are allowed.
    #[serde(rename = "DENY")]
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What is asked for: any of these.
    pub permissions: Vec<Permission>,
    /// Who asks: any of these.
    pub principals: Vec<Principal>,
}

/// What a request asks for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Every request (`{"any": true}`).
    Any(bool),
    /// The method, exactly (`GET`).
    Method(String),
    /// The path without its query.
    Path(StringMatch),
    /// A request header.
    Header(HeaderMatch),
    /// The local port the connection came in on.
    DestinationPort(u16),
    And(Vec<Permission>),
    Or(Vec<Permission>),
    Not(Box<Permission>),
}

/// Who sent a request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Principal {
    /// Everyone (`{"any": true}`).
    Any(bool),
    /// A peer that presented a verified client certificate.
    Authenticated(Authenticated),
    /// The downstream address is in this network (`10.0.0.0/8`, `2001:db8::/32`, or one
    /// address).
    SourceIp(Network),
    /// A claim of the token the jwt-authn filter verified (`wasmesh.jwt.claims`).
    JwtClaim(ClaimMatch),
    /// A request header.
    Header(HeaderMatch),
    And(Vec<Principal>),
    Or(Vec<Principal>),
    Not(Box<Principal>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authenticated {
    /// Matched against the certificate's URI SAN (a SPIFFE ID), else its DNS SAN, else its
    /// subject; absent: any verified peer.
    #[serde(default)]
    pub principal_name: Option<StringMatch>,
}

/// A string matcher: one of `exact`, `prefix`, `suffix`, `regex` (the whole value must match).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Regex(r) => r.0.is_match(value),
        }
    }
}

/// A header, or a claim: one matcher, or `present`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub regex: Option<Regex>,
    /// `true`: the header is there; `false`: it is not.
    #[serde(default)]
    pub present: Option<bool>,
}

/// A JWT claim, by name or dotted path, with the same matchers as a header.
pub type ClaimMatch = HeaderMatch;

impl HeaderMatch {
    /// The one matcher given, as a [`StringMatch`] (or `None` for `present`).
    fn matcher(&self) -> Option<StringMatch> {
        if let Some(s) = &self.exact {
            return Some(StringMatch::Exact(s.clone()));
        }
        if let Some(s) = &self.prefix {
            return Some(StringMatch::Prefix(s.clone()));
        }
        if let Some(s) = &self.suffix {
            return Some(StringMatch::Suffix(s.clone()));
        }
        self.regex.clone().map(StringMatch::Regex)
    }

    fn given(&self) -> usize {
        [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.suffix.is_some(),
            self.regex.is_some(),
            self.present.is_some(),
        ]
        .into_iter()
        .filter(|g| *g)
        .count()
    }

    /// Whether `values` (none when absent) satisfy the match.
    fn check(&self, values: &[String]) -> bool {
        match (self.present, self.matcher()) {
            (Some(present), _) => present != values.is_empty(),
            (None, Some(m)) => values.iter().any(|v| m.matches(v)),
            (None, None) => false,
        }
    }
}

/// A regular expression (the `regex-lite` syntax) that must match a whole value.
#[derive(Clone)]
pub struct Regex(regex_lite::Regex);

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({})", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Regex, D::Error> {
        let source = String::deserialize(d)?;
        regex_lite::Regex::new(&format!("^(?:{source})$"))
            .map(Regex)
            .map_err(|e| serde::de::Error::custom(format!("bad regex {source:?}: {e}")))
    }
}

/// An IP network; one address is a network of one.
#[derive(Debug, Clone)]
pub struct Network(ipnet::IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Network, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Network(net.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|ip| Network(ip.into()))
            .map_err(|_| {
                serde::de::Error::custom(format!("\"{text}\" is not an IP address or CIDR range"))
            })
    }
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// A claim by name, or by dotted path into nested objects; a name that exists as is wins.
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    let claims = claims.as_object()?;
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A claim's values as text: a list gives each scalar element, a scalar itself.
fn claim_values(value: &Value) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

impl Permission {
    pub fn matches(&self, facts: &dyn Facts) -> bool {
        match self {
            Permission::Any(any) => *any,
            Permission::Method(method) => facts.method().as_deref() == Some(method.as_str()),
            Permission::Path(m) => facts.path().is_some_and(|p| m.matches(&p)),
            Permission::Header(h) => h.check(&facts.header(&h.name)),
            Permission::DestinationPort(port) => facts.destination_port() == Some(*port),
            Permission::And(all) => all.iter().all(|p| p.matches(facts)),
            Permission::Or(any) => any.iter().any(|p| p.matches(facts)),
            Permission::Not(p) => !p.matches(facts),
        }
    }
}

impl Principal {
    pub fn matches(&self, facts: &dyn Facts) -> bool {
        match self {
            Principal::Any(any) => *any,
            Principal::Authenticated(a) => facts.peer().is_some_and(|peer| {
                a.principal_name
                    .as_ref()
                    .is_none_or(|m| m.matches(peer.name()))
            }),
            Principal::SourceIp(net) => facts.source_ip().is_some_and(|ip| net.contains(ip)),
            Principal::JwtClaim(c) => {
                let values = facts
                    .claims()
                    .and_then(|claims| claim(claims, &c.name).map(claim_values))
                    .unwrap_or_default();
                c.check(&values)
            }
            Principal::Header(h) => h.check(&facts.header(&h.name)),
            Principal::And(all) => all.iter().all(|p| p.matches(facts)),
            Principal::Or(any) => any.iter().any(|p| p.matches(facts)),
            Principal::Not(p) => !p.matches(facts),
        }
    }
}

impl Policy {
    pub fn matches(&self, facts: &dyn Facts) -> bool {
        self.permissions.iter().any(|p| p.matches(facts))
            && self.principals.iter().any(|p| p.matches(facts))
    }
}

fn check_header(at: &str, h: &mut HeaderMatch, what: &str) -> Result<(), ConfigError> {
    if h.given() != 1 {
        return Err(ConfigError::at(
            at,
            format!("a {what} match needs exactly one of exact, prefix, suffix, regex, present"),
        ));
    }
    if h.name.is_empty() {
        return Err(ConfigError::at(format!("{at}.name"), "must not be empty"));
    }
    if what == "header" {
        h.name = h.name.to_ascii_lowercase();
    }
    Ok(())
}

fn check_permission(at: &str, p: &mut Permission) -> Result<(), ConfigError> {
    match p {
        Permission::Any(false) => Err(ConfigError::at(format!("{at}.any"), "must be true")),
        Permission::Header(h) => check_header(&format!("{at}.header"), h, "header"),
        Permission::And(list) => check_permissions(&format!("{at}.and"), list),
        Permission::Or(list) => check_permissions(&format!("{at}.or"), list),
        Permission::Not(inner) => check_permission(&format!("{at}.not"), inner),
        _ => Ok(()),
    }
}

fn check_permissions(at: &str, list: &mut [Permission]) -> Result<(), ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(at, "must not be empty"));
    }
    for (i, item) in list.iter_mut().enumerate() {
        check_permission(&format!("{at}[{i}]"), item)?;
    }
    Ok(())
}

fn check_principal(at: &str, p: &mut Principal) -> Result<(), ConfigError> {
    match p {
        Principal::Any(false) => Err(ConfigError::at(format!("{at}.any"), "must be true")),
        Principal::Header(h) => check_header(&format!("{at}.header"), h, "header"),
        Principal::JwtClaim(c) => check_header(&format!("{at}.jwt_claim"), c, "jwt_claim"),
        Principal::And(list) => check_principals(&format!("{at}.and"), list),
        Principal::Or(list) => check_principals(&format!("{at}.or"), list),
        Principal::Not(inner) => check_principal(&format!("{at}.not"), inner),
        _ => Ok(()),
    }
}

fn check_principals(at: &str, list: &mut [Principal]) -> Result<(), ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(at, "must not be empty"));
    }
    for (i, item) in list.iter_mut().enumerate() {
        check_principal(&format!("{at}[{i}]"), item)?;
    }
    Ok(())
}

impl Config {
    /// Checks what parsing cannot: non-empty lists, one matcher per header or claim match,
    /// `any: true`.
    pub fn check(&mut self) -> Result<(), ConfigError> {
        for (name, policy) in &mut self.policies {
            let at = format!("policies.{name}");
            check_permissions(&format!("{at}.permissions"), &mut policy.permissions)?;
            check_principals(&format!("{at}.principals"), &mut policy.principals)?;
        }
        Ok(())
    }

    /// The first policy (in name order) that matches, if any.
    pub fn matching_policy(&self, facts: &dyn Facts) -> Option<&str> {
        self.policies
            .iter()
            .find(|(_, p)| p.matches(facts))
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Peer, tests::Fixed};

    fn config(json: &str) -> Config {
        let mut c: Config = wasmesh_sdk::config::parse(json.as_bytes()).expect("parses");
        c.check().expect("valid");
        c
    }

    fn permission(json: &str) -> Permission {
        let mut p: Permission = serde_json::from_str(json).expect(json);
        check_permission("p", &mut p).expect(json);
        p
    }

    fn principal(json: &str) -> Principal {
        let mut p: Principal = serde_json::from_str(json).expect(json);
        check_principal("p", &mut p).expect(json);
        p
    }

    fn request() -> Fixed {
        Fixed {
            method: Some("GET".into()),
            path: Some("/api/users/42".into()),
            headers: vec![
                ("x-env".into(), "canary".into()),
                ("x-tag".into(), "a".into()),
                ("x-tag".into(), "b".into()),
            ],
            destination_port: Some(8443),
            source_ip: Some("10.1.2.3".parse().expect("ip")),
            peer: Some(Peer {
                uri_san: Some("spiffe://mesh/ns/web/sa/frontend".into()),
                dns_san: None,
                subject: Some("CN=frontend".into()),
            }),
            claims: Some(serde_json::json!({"sub": "alice", "groups": ["dev", "ops"],
                                            "org": {"team": "payments"}, "level": 3})),
        }
    }

    #[test]
    fn permissions() {
        let r = request();
        for (json, want) in [
            (r#"{"any": true}"#, true),
            (r#"{"method": "GET"}"#, true),
            (r#"{"method": "get"}"#, false),
            (r#"{"path": {"exact": "/api/users/42"}}"#, true),
            (r#"{"path": {"prefix": "/api/"}}"#, true),
            (r#"{"path": {"suffix": "/42"}}"#, true),
            (r#"{"path": {"regex": "/api/users/[0-9]+"}}"#, true),
            (r#"{"path": {"regex": "/api/users"}}"#, false),
            (r#"{"header": {"name": "X-Env", "exact": "canary"}}"#, true),
            (r#"{"header": {"name": "x-tag", "exact": "b"}}"#, true),
            (r#"{"header": {"name": "x-env", "present": true}}"#, true),
            (r#"{"header": {"name": "x-none", "present": false}}"#, true),
            (r#"{"header": {"name": "x-none", "regex": ".*"}}"#, false),
            (r#"{"destination_port": 8443}"#, true),
            (r#"{"destination_port": 80}"#, false),
            (
                r#"{"and": [{"method": "GET"}, {"path": {"prefix": "/api"}}]}"#,
                true,
            ),
            (
                r#"{"and": [{"method": "GET"}, {"path": {"prefix": "/admin"}}]}"#,
                false,
            ),
            (
                r#"{"or": [{"method": "POST"}, {"path": {"prefix": "/api"}}]}"#,
                true,
            ),
            (r#"{"not": {"method": "POST"}}"#, true),
            (
                r#"{"not": {"or": [{"method": "GET"}, {"method": "HEAD"}]}}"#,
                false,
            ),
        ] {
            assert_eq!(permission(json).matches(&r), want, "{json}");
        }
    }

    #[test]
    fn principals() {
        let r = request();
        for (json, want) in [
            (r#"{"any": true}"#, true),
            (r#"{"authenticated": {}}"#, true),
            (
                r#"{"authenticated": {"principal_name": {"exact": "spiffe://mesh/ns/web/sa/frontend"}}}"#,
                true,
            ),
            (
                r#"{"authenticated": {"principal_name": {"prefix": "spiffe://mesh/ns/db/"}}}"#,
                false,
            ),
            (r#"{"source_ip": "10.0.0.0/8"}"#, true),
            (r#"{"source_ip": "10.1.2.3"}"#, true),
            (r#"{"source_ip": "10.1.2.4/32"}"#, false),
            (r#"{"source_ip": "192.168.0.0/16"}"#, false),
            (r#"{"jwt_claim": {"name": "sub", "exact": "alice"}}"#, true),
            (r#"{"jwt_claim": {"name": "groups", "exact": "ops"}}"#, true),
            (
                r#"{"jwt_claim": {"name": "groups", "exact": "admin"}}"#,
                false,
            ),
            (
                r#"{"jwt_claim": {"name": "org.team", "prefix": "pay"}}"#,
                true,
            ),
            (r#"{"jwt_claim": {"name": "level", "exact": "3"}}"#, true),
            (
                r#"{"jwt_claim": {"name": "email", "present": false}}"#,
                true,
            ),
            (r#"{"header": {"name": "x-env", "exact": "canary"}}"#, true),
            (
                r#"{"and": [{"authenticated": {}}, {"not": {"source_ip": "10.9.0.0/16"}}]}"#,
                true,
            ),
            (
                r#"{"or": [{"source_ip": "::1"}, {"jwt_claim": {"name": "sub", "exact": "bob"}}]}"#,
                false,
            ),
        ] {
            assert_eq!(principal(json).matches(&r), want, "{json}");
        }
    }

    #[test]
    fn without_mtls_jwt_or_address_nothing_of_theirs_matches() {
        let bare = Fixed::default();
        for json in [
            r#"{"authenticated": {}}"#,
            r#"{"source_ip": "0.0.0.0/0"}"#,
            r#"{"jwt_claim": {"name": "sub", "regex": ".*"}}"#,
        ] {
            assert!(!principal(json).matches(&bare), "{json}");
        }
        assert!(principal(r#"{"not": {"authenticated": {}}}"#).matches(&bare));
        assert!(!permission(r#"{"path": {"prefix": "/"}}"#).matches(&bare));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_ranges() {
        let r = Fixed {
            source_ip: Some("::ffff:10.0.0.1".parse().expect("ip")),
            ..Fixed::default()
        };
        assert!(principal(r#"{"source_ip": "10.0.0.0/24"}"#).matches(&r));
        assert!(
            principal(r#"{"source_ip": "2001:db8::/32"}"#).matches(&Fixed {
                source_ip: Some("2001:db8::5".parse().expect("ip")),
                ..Fixed::default()
            })
        );
    }

    #[test]
    fn the_first_policy_by_name_decides() {
        let c = config(
            r#"{"action": "ALLOW", "policies": {
                "b-api": {"permissions": [{"path": {"prefix": "/api"}}], "principals": [{"any": true}]},
                "a-get": {"permissions": [{"method": "GET"}], "principals": [{"authenticated": {}}]},
                "c-none": {"permissions": [{"method": "DELETE"}], "principals": [{"any": true}]}}}"#,
        );
        assert_eq!(c.matching_policy(&request()), Some("a-get"));
        let post = Fixed {
            method: Some("POST".into()),
            ..request()
        };
        assert_eq!(c.matching_policy(&post), Some("b-api"));
        assert_eq!(c.matching_policy(&Fixed::default()), None);
    }

    #[test]
    fn mistakes_name_their_field() {
        for (json, path, message) in [
            (r#"{"policies": {}}"#, ".", "missing field `action`"),
            (
                r#"{"action": "MAYBE"}"#,
                "action",
                "unknown variant `MAYBE`",
            ),
            (
                r#"{"action": "ALLOW", "policies": {"p": {"permissions": [], "principals": [{"any": true}]}}}"#,
                "policies.p.permissions",
                "must not be empty",
            ),
            (
                r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"metod": "GET"}], "principals": [{"any": true}]}}}"#,
                "policies.p.permissions[0]",
                "unknown variant `metod`",
            ),
            (
                r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"path": {"regex": "(["}}], "principals": [{"any": true}]}}}"#,
                "policies.p.permissions[0].path.regex",
                "bad regex",
            ),
            (
                r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"any": true}], "principals": [{"source_ip": "10.0.0.0/33"}]}}}"#,
                "policies.p.principals[0].source_ip",
                "not an IP address or CIDR range",
            ),
            (
                r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"any": true}], "principals": [{"or": [{"any": true}, {"header": {"name": "x", "exact": "1", "prefix": "2"}}]}]}}}"#,
                "policies.p.principals[0].or[1].header",
                "exactly one of",
            ),
            (
                r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"and": []}], "principals": [{"any": true}]}}}"#,
                "policies.p.permissions[0].and",
                "must not be empty",
            ),
            (
                r#"{"action": "ALLOW", "policies": {"p": {"permissions": [{"any": false}], "principals": [{"any": true}]}}}"#,
                "policies.p.permissions[0].any",
                "must be true",
            ),
        ] {
            let err = wasmesh_sdk::config::parse::<Config>(json.as_bytes())
                .and_then(|mut c| c.check().map(|_| c))
                .expect_err(json);
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
        }
    }
}
