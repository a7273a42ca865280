//! Reload triggers on disk: the configuration file changing ([`Control::apply`]) and the TLS
//! certificate, key and CA files it names changing ([`Control::refresh_tls`]). (The admin
//! API's `PUT /config` is the other trigger of a whole reload.)

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};

use notify::{RecursiveMode, Watcher};
use tokio::task::JoinHandle;

use crate::config;
use crate::server::{Control, RELOAD_DEBOUNCE};

/// Debounces file events: waits until none has come for `RELOAD_DEBOUNCE`. `false` if the
/// watcher went away meanwhile.
async fn settled(rx: &mut tokio::sync::mpsc::UnboundedReceiver<()>) -> bool {
    loop {
        match tokio::time::timeout(RELOAD_DEBOUNCE, rx.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// Watches the directory holding `path` — not the file itself, since editors and config
/// management replace files by renaming a new one over them, which ends a watch on the old
/// inode — and applies the file after each burst of changes to it.
pub(crate) fn watch_file(
    control: Arc<Control>,
    path: PathBuf,
) -> Result<JoinHandle<()>, notify::Error> {
    let path = std::path::absolute(&path).unwrap_or(path);
    let dir = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = path.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
            if ours && !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // An editor's save is several events; act once it is quiet.
            if !settled(&mut rx).await {
                return;
            }
            if !path.exists() {
                // Mid-rename; the create event that follows triggers the reload.
                continue;
            }
            tracing::info!(path = %path.display(), "configuration file changed; reloading");
            match config::load_file(&path) {
                Ok(cfg) => {
                    let _ = control.apply(cfg, "file").await;
                }
                Err(errors) => {
                    control.reject(errors.to_string(), "file").await;
                }
            }
        }
    }))
}

/// Watches the directories holding the running listeners' and clusters' TLS files and, after
/// each burst of changes to those files, puts the certificates that changed into service. The
/// files watched follow the configuration: they are looked up again after every swap.
///
/// A Kubernetes secret volume updates its files by renaming a `..data` symlink in the same
/// directory, so a change to any `..`-prefixed entry counts too. Other files in the
/// directories (a busy log, say) are ignored in the watcher's thread and wake nothing.
pub(crate) fn watch_tls(control: Weak<Control>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let names: Arc<RwLock<HashSet<OsString>>> = Arc::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let relevant = names.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let names = relevant.read().unwrap_or_else(|e| e.into_inner());
            let ours = event
                .paths
                .iter()
                .filter_map(|p| p.file_name())
                .any(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."));
            if ours {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch TLS files; certificates change only with a reload");
                return;
            }
        };
        let Some(mut swapped) = control.upgrade().map(|c| c.swapped.subscribe()) else {
            return;
        };
        let mut watched: HashSet<PathBuf> = HashSet::new();
        loop {
            // What to watch, for the configuration running now.
            {
                let Some(control) = control.upgrade() else {
                    return;
                };
                let files = control.tls_paths();
                let dirs: HashSet<PathBuf> = files
                    .iter()
                    .filter_map(|f| f.parent().map(PathBuf::from))
                    .collect();
                *names.write().unwrap_or_else(|e| e.into_inner()) = files
                    .iter()
                    .filter_map(|f| f.file_name().map(OsString::from))
                    .collect();
                for gone in watched.difference(&dirs) {
                    let _ = watcher.unwatch(gone);
                }
                for dir in dirs.difference(&watched) {
                    if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %err, "cannot watch a TLS directory");
                    }
                }
                watched = dirs;
            }
            tokio::select! {
                changed = swapped.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    // A rotation writes a certificate and a key, perhaps in steps.
                    if !settled(&mut rx).await {
                        return;
                    }
                    let Some(control) = control.upgrade() else {
                        return;
                    };
                    // Errors are logged and kept for `GET /config/status`; the next change to
                    // the files tries again.
                    let _ = control.refresh_tls("TLS files changed").await;
                }
            }
        }
    })
}
