//! The verified-token cache of one provider in one VM replica, as Envoy's `jwt_cache_config`:
//! a bounded LRU map from the SHA-256 of a token string to what checking its signature gave,
//! so a token seen again skips the signature check, by far the costliest step (an RS256 check
//! takes most of a millisecond in Wasm).
//!
//! It holds only what depends on the token string and the key set alone. What depends on the
//! time or the configuration (`exp`, `nbf`, `iss`, `aud`) is checked again on every hit, and an
//! entry that fails that is dropped. A cache belongs to one key set: it is emptied whenever the
//! provider's keys are replaced (see `ProviderKeys` in the crate root), so a token signed with a
//! rotated-out key stops passing at the same moment as it would without a cache. Only tokens
//! that passed every check are put in.
//!
//! Entries are keyed by a digest, so the cache keeps no token (a credential) in memory, only
//! the claims, which the request passes on anyway; and a token differing from a cached one by
//! a single byte — another signature over the same claims — is another key, checked in full.
//! Each replica (one per worker) has its own caches: nothing goes through shared data.

use std::rc::Rc;

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::config::CacheConfig;
use crate::token::Verified;

/// The SHA-256 of a token string.
pub type TokenHash = [u8; 32];

/// Tokens one provider verified, the most recently used kept.
pub struct TokenCache {
    /// Grows as tokens come (nothing is allocated up front); [`TokenCache::insert`] keeps it
    /// within `size`.
    entries: LruCache<TokenHash, Rc<Verified>>,
    /// Most entries; 0: the cache is off.
    size: usize,
    /// Longest token kept, bytes.
    max_token: usize,
}

/// What the cache knows of a token.
pub enum Lookup {
    /// The cache is off, or the token is longer than it keeps: verify, and do not insert.
    Uncached,
    /// Its signature verified with the current keys; its claims still need checking.
    Hit(TokenHash, Rc<Verified>),
    /// Not there: verify, and insert under this hash if it passes.
    Miss(TokenHash),
}

impl TokenCache {
    pub fn new(config: CacheConfig) -> TokenCache {
        TokenCache {
            entries: LruCache::unbounded(),
            size: config.jwt_cache_size,
            max_token: config.jwt_max_token_size,
        }
    }

    /// Looks `token` up, making it the most recently used if it is there.
    pub fn lookup(&mut self, token: &str) -> Lookup {
        if self.size == 0 || token.len() > self.max_token {
            return Lookup::Uncached;
        }
        let hash: TokenHash = Sha256::digest(token.as_bytes()).into();
        match self.entries.get(&hash) {
            Some(verified) => Lookup::Hit(hash, verified.clone()),
            None => Lookup::Miss(hash),
        }
    }

    /// Keeps a token that passed every check, making room by dropping the least recently used.
    pub fn insert(&mut self, hash: TokenHash, verified: Rc<Verified>) {
        if self.size == 0 {
            return;
        }
        if self.entries.len() >= self.size && !self.entries.contains(&hash) {
            self.entries.pop_lru();
        }
        self.entries.put(hash, verified);
    }

    /// Drops a token that no longer passes.
    pub fn remove(&mut self, hash: &TokenHash) {
        self.entries.pop(hash);
    }

    /// Drops every token: the keys they were verified with are gone.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(size: usize, max_token: usize) -> TokenCache {
        TokenCache::new(CacheConfig {
            jwt_cache_size: size,
            jwt_max_token_size: max_token,
        })
    }

    fn verified(sub: &str) -> Rc<Verified> {
        let payload = serde_json::json!({ "sub": sub });
        Rc::new(Verified {
            claims: payload.as_object().cloned().unwrap_or_default(),
            payload: payload.to_string().into_bytes(),
        })
    }

    /// Looks `token` up and inserts it on a miss; says whether it was a hit.
    fn touch(cache: &mut TokenCache, token: &str) -> bool {
        match cache.lookup(token) {
            Lookup::Hit(..) => true,
            Lookup::Miss(hash) => {
                cache.insert(hash, verified(token));
                false
            }
            Lookup::Uncached => panic!("{token} not cacheable"),
        }
    }

    #[test]
    fn hits_return_what_was_inserted() {
        let mut c = cache(4, 100);
        assert!(!touch(&mut c, "a.b.c"));
        let Lookup::Hit(hash, v) = c.lookup("a.b.c") else {
            panic!("a hit")
        };
        assert_eq!(v.claims["sub"], "a.b.c");
        assert_eq!(hash, <TokenHash>::from(Sha256::digest(b"a.b.c")));
        assert!(
            matches!(c.lookup("a.b.d"), Lookup::Miss(_)),
            "one byte apart is another token"
        );
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut c = cache(2, 100);
        touch(&mut c, "t1");
        touch(&mut c, "t2");
        assert!(touch(&mut c, "t1"), "t1 is now the most recent");
        touch(&mut c, "t3");
        assert_eq!(c.len(), 2);
        assert!(matches!(c.lookup("t2"), Lookup::Miss(_)), "t2 evicted");
        assert!(matches!(c.lookup("t1"), Lookup::Hit(..)));
        assert!(matches!(c.lookup("t3"), Lookup::Hit(..)));
    }

    #[test]
    fn remove_and_clear() {
        let mut c = cache(4, 100);
        touch(&mut c, "t1");
        touch(&mut c, "t2");
        let Lookup::Hit(hash, _) = c.lookup("t1") else {
            panic!("a hit")
        };
        c.remove(&hash);
        assert!(matches!(c.lookup("t1"), Lookup::Miss(_)));
        c.clear();
        assert_eq!(c.len(), 0);
        assert!(matches!(c.lookup("t2"), Lookup::Miss(_)));
    }

    #[test]
    fn size_zero_and_long_tokens_are_not_cached() {
        let mut off = cache(0, 100);
        assert!(matches!(off.lookup("t1"), Lookup::Uncached));
        off.insert([0; 32], verified("x"));
        assert_eq!(off.len(), 0);
        let mut c = cache(4, 5);
        assert!(matches!(c.lookup("12345"), Lookup::Miss(_)));
        assert!(matches!(c.lookup("123456"), Lookup::Uncached));
    }
}
