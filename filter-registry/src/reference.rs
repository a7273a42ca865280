//! Image references: `[oci://]HOST[:PORT]/REPO[:TAG][@DIGEST]`, and which hosts count as
//! loopback (Docker reaches those over plain HTTP without being told to).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::client::ClientError;
use crate::store::{Digest, validate_repo_name, validate_tag};

/// A parsed reference: `[oci://]HOST[:PORT]/REPO(:TAG|@DIGEST)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub host: String,
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference. A reference with neither tag nor digest means tag `latest`.
    pub fn parse(s: &str) -> Result<ImageRef, ClientError> {
        let bad = |why: &str| ClientError::Reference(s.to_string(), why.to_string());
        let rest = s.strip_prefix("oci://").unwrap_or(s);
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            return Err(bad("invalid host"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => (p, Some(d.parse::<Digest>()?)),
            None => (path, None),
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => {
                validate_tag(t)?;
                (r, Some(t.to_string()))
            }
            _ => (path, None),
        };
        validate_repo_name(repo)?;
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            host: host.to_string(),
            repo: repo.to_string(),
            tag,
            digest,
        })
    }

    /// The manifest reference to request: the digest if pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same repository, pinned to `digest` (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `HOST/REPO:TAG` without any digest, when the reference has a tag: the key under which a
    /// tag's last resolution is remembered.
    pub fn tag_reference(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}/{}:{t}", self.host, self.repo))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets) into the host name and the port text.
pub fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((h, _)) if h.contains(':') => (authority, None),
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    }
}

/// Whether `authority` (`host[:port]`) names this machine: `localhost` (and `*.localhost`),
/// `127.0.0.0/8` or `::1`. Decided from the text alone, with no name lookup.
pub fn is_loopback(authority: &str) -> bool {
    let (host, _) = split_host_port(authority);
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `authority` names an address no registry token service lives at: link-local
/// (where cloud metadata services answer), unspecified, or a well-known metadata name.
pub fn is_metadata_or_link_local(authority: &str) -> bool {
    let (host, _) = split_host_port(authority);
    let host = host.to_ascii_lowercase();
    if matches!(
        host.trim_end_matches('.'),
        "metadata.google.internal" | "metadata" | "instance-data" | "instance-data.ec2.internal"
    ) {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_link_local() || v4 == Ipv4Addr::UNSPECIFIED,
        Ok(IpAddr::V6(v6)) => {
            v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_link_local() || v4 == Ipv4Addr::UNSPECIFIED)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "reg.localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1:5000",
            "example.com",
            "[::2]:1",
            "localhost.example",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
        for h in [
            "169.254.169.254",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "metadata.google.internal",
            "0.0.0.0:80",
            "[::ffff:169.254.169.254]",
        ] {
            assert!(is_metadata_or_link_local(h), "{h}");
        }
        assert!(!is_metadata_or_link_local("auth.docker.io"));
        assert_eq!(split_host_port("[::1]:5000"), ("::1", Some("5000")));
        assert_eq!(split_host_port("h:1"), ("h", Some("1")));
        assert_eq!(split_host_port("h"), ("h", None));
    }
}
