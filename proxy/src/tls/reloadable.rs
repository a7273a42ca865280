//! A rustls configuration that follows the files it was built from.
//!
//! Certificates are rotated on disk — by cert-manager, SPIRE, a Kubernetes secret update —
//! while the proxy runs, as Envoy's file-based SDS expects. A [`Reloadable`] keeps the bytes
//! its configuration was built from; [`Reloadable::prepare`] reads the files again and, if any
//! changed, builds the new configuration without putting it into service, so a reload that
//! touches several listeners and clusters either takes all their new certificates or none.
//! [`Update::commit`] then swaps it in: connections opened afterwards use it, open ones keep
//! the session they have.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{Files, TlsError};

type Build<C> = dyn Fn(&mut Files) -> Result<C, TlsError> + Send + Sync;

/// A configuration built from files, rebuilt when they change.
pub struct Reloadable<C> {
    current: ArcSwap<C>,
    /// The files the current configuration was built from.
    files: Mutex<Files>,
    build: Box<Build<C>>,
}

impl<C> std::fmt::Debug for Reloadable<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloadable")
            .field("files", &self.paths())
            .finish_non_exhaustive()
    }
}

impl<C> Reloadable<C> {
    /// The configuration for a connection opening now.
    pub fn current(&self) -> Arc<C> {
        self.current.load_full()
    }

    /// The files the configuration is built from.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paths()
            .map(PathBuf::from)
            .collect()
    }
}

impl<C: Send + Sync + 'static> Reloadable<C> {
    /// Builds the configuration now; `build` reads its files through the `Files` it is given.
    pub fn new(
        build: impl Fn(&mut Files) -> Result<C, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Reloadable<C>>, TlsError> {
        let mut files = Files::default();
        let config = build(&mut files)?;
        Ok(Arc::new(Reloadable {
            current: ArcSwap::from_pointee(config),
            files: Mutex::new(files),
            build: Box::new(build),
        }))
    }

    /// Builds the configuration again if any of its files changed; `None` if none did. Nothing
    /// changes until the update is committed.
    pub fn prepare(self: &Arc<Self>) -> Result<Option<Update>, TlsError> {
        if !self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changed()
        {
            return Ok(None);
        }
        let mut files = Files::default();
        let config = Arc::new((self.build)(&mut files)?);
        let target = self.clone();
        Ok(Some(Update(Box::new(move || {
            target.current.store(config);
            *target.files.lock().unwrap_or_else(|e| e.into_inner()) = files;
        }))))
    }
}

/// A rebuilt configuration, ready to go into service.
pub struct Update(Box<dyn FnOnce() + Send>);

impl Update {
    pub fn commit(self) {
        (self.0)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloadable(path: &std::path::Path) -> Arc<Reloadable<String>> {
        let path = path.display().to_string();
        Reloadable::new(move |files| {
            let bytes = files.read(&path).map_err(|e| TlsError::Certificates {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            String::from_utf8(bytes).map_err(|_| TlsError::NoCertificates { path: path.clone() })
        })
        .expect("first build")
    }

    #[test]
    fn a_changed_file_is_built_again_and_taken_only_on_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "one").expect("write");
        let tls = reloadable(&path);
        assert_eq!(*tls.current(), "one");
        assert!(tls.prepare().expect("unchanged").is_none());

        std::fs::write(&path, "two").expect("write");
        let update = tls.prepare().expect("rebuilt").expect("a change");
        assert_eq!(*tls.current(), "one", "nothing changes before the commit");
        update.commit();
        assert_eq!(*tls.current(), "two");
        assert!(tls.prepare().expect("unchanged").is_none());
    }

    #[test]
    fn a_file_that_fails_to_build_keeps_the_running_configuration() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "one").expect("write");
        let tls = reloadable(&path);
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        assert!(tls.prepare().is_err());
        std::fs::remove_file(&path).expect("remove");
        assert!(tls.prepare().is_err());
        assert_eq!(*tls.current(), "one");
    }
}
