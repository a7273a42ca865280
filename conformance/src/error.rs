//! The suite's one error type: something it needed could not be set up or reached (a probe
//! missing, a server that did not start, a request that failed on the wire). What a probe
//! observed is never an error: it is compared with the expected value instead.

/// What kept the suite from running a part of itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

impl Error {
    /// An error saying what was being done and why it failed.
    pub fn new(doing: &str, cause: impl std::fmt::Display) -> Error {
        Error(format!("{doing}: {cause}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an error.
pub trait Context<T> {
    fn doing(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn doing(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::new(what, e))
    }
}

impl<T> Context<T> for Option<T> {
    fn doing(self, what: &str) -> Result<T> {
        self.ok_or_else(|| Error(format!("{what}: not there")))
    }
}
