//! The registry's own token service (Docker's token flow): a client that meets a
//! `401 WWW-Authenticate: Bearer realm=…/token` asks `GET /token?service=…&scope=…` with Basic
//! credentials (any user name, the push or pull token as password) — or `POST /token` with an
//! OAuth2 `password` or `refresh_token` grant — and gets a short-lived random token granting
//! what those credentials allow. The registry keeps issued tokens in memory only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an issued token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Bound on tokens held at once; the oldest go first past it.
const MAX_TOKENS: usize = 10_000;

/// What a credential allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub pull: bool,
    pub push: bool,
}

impl Grant {
    pub fn allows(self, push: bool) -> bool {
        if push { self.push } else { self.pull }
    }
}

/// Tokens issued by this registry process.
#[derive(Default)]
pub struct Issued {
    tokens: Mutex<HashMap<String, (Grant, Instant)>>,
}

impl Issued {
    /// Issues a fresh random token for `grant`.
    pub fn issue(&self, grant: Grant) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, (_, until)| *until > now);
        }
        if tokens.len() >= MAX_TOKENS
            && let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| k.clone())
        {
            tokens.remove(&oldest);
        }
        tokens.insert(token.clone(), (grant, now + TOKEN_LIFETIME));
        token
    }

    /// What `token` grants, if this process issued it and it has not expired.
    pub fn grant(&self, token: &str) -> Option<Grant> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(token)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(g, _)| *g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_grant_what_they_were_issued_for() {
        let issued = Issued::default();
        let t = issued.issue(Grant {
            pull: true,
            push: false,
        });
        assert_eq!(t.len(), 64);
        let g = issued.grant(&t).expect("known");
        assert!(g.allows(false) && !g.allows(true));
        assert!(issued.grant("other").is_none());
        let u = issued.issue(Grant {
            pull: true,
            push: true,
        });
        assert_ne!(t, u);
        assert!(issued.grant(&u).expect("known").allows(true));
    }
}
