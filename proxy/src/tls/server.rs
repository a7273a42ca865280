//! Downstream TLS termination: certificate selection by SNI and client-certificate verification.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::reloadable::Reloadable;
use super::{Files, TlsError, load_certs, load_key, load_roots, provider};
use crate::config::ListenerTls;

/// A listener's TLS configuration, rebuilt when its certificate, key or CA files change.
pub fn reloadable(tls: &ListenerTls) -> Result<Arc<Reloadable<ServerConfig>>, TlsError> {
    let tls = tls.clone();
    Reloadable::new(move |files| build(&tls, files))
}

/// Builds the rustls server configuration for one listener, reading its files through `files`.
pub fn build(tls: &ListenerTls, files: &mut Files) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let mut entries = Vec::with_capacity(tls.certificates.len());
    for pair in &tls.certificates {
        let chain = load_certs(files, &pair.cert_file)?;
        let key = load_key(files, &pair.key_file)?;
        let signing_key =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::PrivateKey {
                    path: pair.key_file.clone(),
                    reason: e.to_string(),
                })?;
        let certified = Arc::new(CertifiedKey::new(chain, signing_key));
        // A rotation caught between writing the certificate and its key would otherwise
        // serve a pair no client can verify; refused, the next change to the files tries again.
        if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
            certified.keys_match()
        {
            return Err(TlsError::PrivateKey {
                path: pair.key_file.clone(),
                reason: format!("does not match the certificate in \"{}\"", pair.cert_file),
            });
        }
        entries.push((
            pair.server_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect::<Vec<_>>(),
            certified,
        ));
    }
    let resolver = SniResolver { entries };

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let roots = load_roots(files, ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.require_client_cert {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| TlsError::ClientCa {
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = tls.alpn().iter().map(|a| a.wire().to_vec()).collect();
    Ok(config)
}

/// Picks the certificate for the client's SNI as Envoy does: an exact name before a wildcard,
/// and among those, one whose key can sign with a scheme the client offers (a name may have an
/// ECDSA and an RSA certificate). The first usable certificate is the default, so clients that
/// send no SNI (or an unknown name) still complete a handshake.
#[derive(Debug)]
struct SniResolver {
    entries: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let schemes = hello.signature_schemes();
        pick(&self.entries, sni.as_deref(), |key| {
            key.key.choose_scheme(schemes).is_some()
        })
        .cloned()
    }
}

/// The certificate for `sni` among `entries` (names, certificate), by [`SniResolver`]'s rules.
fn pick<'a, K>(
    entries: &'a [(Vec<String>, K)],
    sni: Option<&str>,
    usable: impl Fn(&K) -> bool,
) -> Option<&'a K> {
    // 0: an exact name, 1: a wildcard, 2: the default.
    let rank = |names: &[String]| match sni {
        Some(sni) if names.iter().any(|n| n == sni) => 0,
        Some(sni)
            if names
                .iter()
                .any(|n| n.starts_with("*.") && name_matches(n, sni)) =>
        {
            1
        }
        _ => 2,
    };
    for tier in 0..=2 {
        let mut matched = entries
            .iter()
            .filter(|(names, _)| rank(names) <= tier)
            .map(|(_, k)| k);
        let first = matched.next();
        if let Some(key) = first
            .into_iter()
            .chain(matched)
            .find(|k| usable(k))
            .or(first)
        {
            return Some(key);
        }
    }
    None
}

/// `*.example.com` matches exactly one extra label, as certificate wildcards do.
pub(crate) fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::{name_matches, pick};

    #[test]
    fn an_exact_name_beats_a_wildcard_and_a_usable_key_beats_list_order() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (certificate, whether the client can use its key)
        let entries = vec![
            (names(&["api.example.com", "*.example.com"]), ("wild", true)),
            (names(&["admin.example.com"]), ("admin-ecdsa", false)),
            (names(&["admin.example.com"]), ("admin-rsa", true)),
            (names(&["only.example.org"]), ("org", false)),
        ];
        let usable = |k: &(&str, bool)| k.1;
        let got = |sni| pick(&entries, sni, usable).map(|k| k.0);
        assert_eq!(got(Some("admin.example.com")), Some("admin-rsa"));
        assert_eq!(got(Some("api.example.com")), Some("wild"));
        assert_eq!(got(Some("www.example.com")), Some("wild"));
        // Nothing usable for the name: its certificate still, and the handshake says why.
        assert_eq!(got(Some("only.example.org")), Some("org"));
        assert_eq!(got(Some("unknown.test")), Some("wild"));
        assert_eq!(got(None), Some("wild"));
        let no_ecdsa = |k: &(&str, bool)| k.0 != "admin-ecdsa";
        assert_eq!(
            pick(&entries[1..], None, no_ecdsa).map(|k| k.0),
            Some("admin-rsa"),
            "the default is the first usable certificate"
        );
    }

    #[test]
    fn wildcard_matches_one_label() {
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("example.com", "example.com"));
        assert!(!name_matches("example.com", "www.example.com"));
    }
}
