//! Which variant a request goes to: the first override that matches, else the weights —
//! applied to a hash of the stickiness key when there is one (so a user always lands on the
//! same variant), or to a random draw. Pure, so it is tested without a host.

use crate::config::{Config, Override, Sticky, Variant};

/// What the choice reads from a request.
pub trait Request {
    /// Every value of a request header, in order.
    fn header_values(&self, name: &str) -> Vec<String>;
    /// `source.address`, `ip:port`.
    fn source_address(&self) -> Option<String>;
}

/// Why a request got its variant (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Override,
    Sticky,
    Weighted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Override => "override",
            Reason::Sticky => "sticky",
            Reason::Weighted => "weighted",
        }
    }
}

/// The value of cookie `name` in the request's `cookie` headers (HTTP/2 may split them).
pub fn cookie(request: &dyn Request, name: &str) -> Option<String> {
    request.header_values("cookie").iter().find_map(|header| {
        header.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
    })
}

fn matches(o: &Override, request: &dyn Request) -> bool {
    let found = match (&o.header, &o.cookie) {
        (Some(header), _) => request.header_values(header).into_iter().next(),
        (_, Some(name)) => cookie(request, name),
        _ => None,
    };
    match (&o.value, found) {
        (Some(want), Some(got)) => got == *want,
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// The stickiness key's value, if the request has one.
fn sticky_key(sticky: &Sticky, request: &dyn Request) -> Option<String> {
    let value = match sticky {
        Sticky::Header { name, .. } => request.header_values(name).into_iter().next()?,
        Sticky::Cookie { name, .. } => cookie(request, name)?,
        Sticky::ClientIp { .. } => {
            let address = request.source_address()?;
            wasmesh_sdk::headers::split_host_port(&address)
                .0
                .to_string()
        }
    };
    (!value.is_empty()).then_some(value)
}

/// A 64-bit hash of `salt` and `key`: FNV-1a, then a SplitMix64 finish so that keys
/// differing in one character still land far apart.
pub fn hash(salt: &str, key: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in salt.bytes().chain([0xff]).chain(key.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Maps a uniform 64-bit value onto `[0, total)` without modulo bias worth speaking of.
fn scale(value: u64, total: u64) -> u64 {
    ((u128::from(value) * u128::from(total)) >> 64) as u64
}

/// The variant for `request`; `random` gives a uniform 64-bit value when the weights are
/// drawn.
pub fn choose<'a>(
    config: &'a Config,
    request: &dyn Request,
    random: &mut dyn FnMut() -> u64,
) -> (&'a Variant, Reason) {
    for o in &config.overrides {
        if matches(o, request)
            && let Some(variant) = config.variants.iter().find(|v| v.name == o.variant)
        {
            return (variant, Reason::Override);
        }
    }
    let total = config.total_weight();
    if let Some(sticky) = &config.sticky
        && let Some(key) = sticky_key(sticky, request)
    {
        let point = scale(hash(sticky.salt(), &key), total);
        return (config.variant_at(point), Reason::Sticky);
    }
    (config.variant_at(scale(random(), total)), Reason::Weighted)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Fake {
        headers: Vec<(&'static str, String)>,
        source: Option<String>,
    }

    impl Request for Fake {
        fn header_values(&self, name: &str) -> Vec<String> {
            self.headers
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .collect()
        }
        fn source_address(&self) -> Option<String> {
            self.source.clone()
        }
    }

    fn config(json: &str) -> Config {
        let c: Config = wasmesh_sdk::config::parse(json.as_bytes()).expect("parses");
        c.check().expect("valid");
        c
    }

    fn with(headers: &[(&'static str, &str)]) -> Fake {
        Fake {
            headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            source: None,
        }
    }

    #[test]
    fn cookies_are_found_in_any_cookie_header() {
        let r = with(&[
            ("cookie", "a=1; version=v2 ; b=\"q\""),
            ("cookie", "late=yes"),
        ]);
        assert_eq!(cookie(&r, "version").as_deref(), Some("v2"));
        assert_eq!(cookie(&r, "b").as_deref(), Some("q"));
        assert_eq!(cookie(&r, "late").as_deref(), Some("yes"));
        assert_eq!(cookie(&r, "vers"), None);
        assert_eq!(cookie(&with(&[("cookie", "novalue")]), "novalue"), None);
    }

    #[test]
    fn overrides_come_first_in_order() {
        let c = config(
            r#"{"variants": [{"name": "stable", "weight": 1}, {"name": "canary", "weight": 0}],
                "overrides": [{"header": "x-canary", "value": "never", "variant": "stable"},
                              {"header": "x-canary", "variant": "canary"},
                              {"cookie": "version", "value": "v2", "variant": "canary"}]}"#,
        );
        let mut never = || -> u64 { panic!("no draw when an override decides") };
        let pick = |r: &Fake, random: &mut dyn FnMut() -> u64| {
            let (v, why) = choose(&c, r, random);
            (v.name.clone(), why)
        };
        assert_eq!(
            pick(&with(&[("x-canary", "always")]), &mut never),
            ("canary".into(), Reason::Override),
            "presence is enough for the second override"
        );
        assert_eq!(
            pick(&with(&[("x-canary", "never")]), &mut never),
            ("stable".into(), Reason::Override)
        );
        assert_eq!(
            pick(&with(&[("cookie", "version=v2")]), &mut never),
            ("canary".into(), Reason::Override)
        );
        let mut zero = || 0u64;
        assert_eq!(
            pick(&with(&[("cookie", "version=v1")]), &mut zero),
            ("stable".into(), Reason::Weighted)
        );
    }

    #[test]
    fn weights_split_the_draws() {
        let c =
            config(r#"{"variants": [{"name": "a", "weight": 90}, {"name": "b", "weight": 10}]}"#);
        // Evenly spread draws over the whole 64-bit range: exactly the weights.
        let mut counts: HashMap<String, u32> = HashMap::new();
        let n = 1000u128;
        for i in 0..n {
            // The middle of the i-th of n equal slices of the 64-bit range.
            let mut draw = || (((2 * i + 1) << 64) / (2 * n)) as u64;
            let (v, why) = choose(&c, &Fake::default(), &mut draw);
            assert_eq!(why, Reason::Weighted);
            *counts.entry(v.name.clone()).or_default() += 1;
        }
        assert_eq!(counts["a"], 900);
        assert_eq!(counts["b"], 100);
    }

    #[test]
    fn sticky_keys_always_land_on_the_same_variant() {
        let c = config(
            r#"{"variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
                "sticky": {"type": "header", "name": "x-user"}}"#,
        );
        let mut never = || -> u64 { panic!("sticky requests are not drawn") };
        let mut seen = HashMap::new();
        for user in 0..200 {
            let r = with(&[("x-user", &format!("user-{user}"))]);
            let (first, why) = choose(&c, &r, &mut never);
            assert_eq!(why, Reason::Sticky);
            for _ in 0..3 {
                assert_eq!(choose(&c, &r, &mut never).0.name, first.name);
            }
            *seen.entry(first.name.clone()).or_insert(0) += 1;
        }
        let a = seen["a"];
        assert!((60..=140).contains(&a), "users spread over both: {seen:?}");
        let mut zero = || 0u64;
        assert_eq!(
            choose(&c, &Fake::default(), &mut zero).1,
            Reason::Weighted,
            "no key: drawn"
        );
    }

    #[test]
    fn salt_reshuffles_and_client_ips_ignore_ports() {
        let plain = config(
            r#"{"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
                "sticky": {"type": "client_ip"}}"#,
        );
        let salted = config(
            r#"{"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
                "sticky": {"type": "client_ip", "salt": "round-2"}}"#,
        );
        let mut never = || -> u64 { panic!("not drawn") };
        let mut moved = 0;
        for i in 0..100 {
            let at = |port: u16| Fake {
                headers: Vec::new(),
                source: Some(format!("10.0.{i}.1:{port}")),
            };
            let first = choose(&plain, &at(1000), &mut never).0.name.clone();
            assert_eq!(choose(&plain, &at(2000), &mut never).0.name, first);
            if choose(&salted, &at(1000), &mut never).0.name != first {
                moved += 1;
            }
        }
        assert!((20..=80).contains(&moved), "{moved} of 100 moved");
        assert_ne!(hash("", "ab"), hash("a", "b"), "salt and key are separated");
    }
}
