//! Reload triggers: the configuration file changing on disk. (The admin API's `PUT /config` is
//! the other trigger; both end in [`Control::apply`].)

use std::path::PathBuf;
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::task::JoinHandle;

use crate::config;
use crate::server::{Control, RELOAD_DEBOUNCE};

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
            // Debounce: an editor's save is several events; act once it is quiet.
            loop {
                match tokio::time::timeout(RELOAD_DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
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
