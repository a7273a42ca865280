//! Following registry tags, and retrying plugins that could not be fetched at start-up.
//!
//! A plugin with `follow: true` names a tag; every `poll_interval` its registry is asked which
//! manifest the tag names now, and when that is not the one running, the configuration is
//! rebuilt ([`Control::refresh`]): the new module is pulled, verified, compiled and
//! instantiated off the request path and swapped in like any reload, while every other plugin
//! and cluster is shared with the running snapshot. A plugin that could not be fetched at
//! start-up is tried on the same schedule, and put in service once it can be.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::filter::chain::Entry;
use crate::filter::source::is_tag;
use crate::server::{Control, Snapshot};

/// Longest the follower sleeps before looking at the running snapshot again.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// One thing to look at: a followed tag or a plugin waiting to be fetched.
struct Watch {
    key: String,
    interval: Duration,
    /// The manifest digest running now; `None` for a plugin waiting to be fetched.
    running: Option<String>,
    plugin: crate::config::Plugin,
}

fn watches(snapshot: &Snapshot) -> Vec<Watch> {
    let mut out = Vec::new();
    for chain in snapshot.chains.values() {
        for entry in &chain.entries {
            let (plugin, running) = match entry {
                Entry::Loaded(l) if l.config.follow && is_tag(&l.config.source) => {
                    (&l.config, l.manifest_digest.clone())
                }
                Entry::Unavailable { config, .. } => (config, None),
                Entry::Loaded(_) => continue,
            };
            out.push(Watch {
                key: format!("{}/{}/{}", chain.name, plugin.name, plugin.source),
                interval: plugin.poll_interval,
                running,
                plugin: plugin.clone(),
            });
        }
    }
    out
}

pub(crate) async fn run(control: Weak<Control>) {
    let mut checked: HashMap<String, Instant> = HashMap::new();
    let Some((mut swapped, mut tick)) = control
        .upgrade()
        .map(|c| (c.swapped.subscribe(), tick(&watches(&c.snapshot.load()))))
    else {
        return;
    };
    loop {
        // A swap may bring new watches: a tag followed from now on is checked at once, not
        // after up to IDLE_TICK. (Watches checked lately still wait for their interval.)
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            changed = swapped.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        swapped.borrow_and_update();
        let Some(control) = control.upgrade() else {
            return;
        };
        let watches = watches(&control.snapshot.load());
        tick = self::tick(&watches);
        checked.retain(|key, _| watches.iter().any(|w| &w.key == key));
        let now = Instant::now();
        for watch in watches {
            let due = checked
                .get(&watch.key)
                .is_none_or(|last| now.duration_since(*last) >= watch.interval);
            if !due {
                continue;
            }
            checked.insert(watch.key.clone(), now);
            if let Some(trigger) = check(&control, &watch).await {
                // One rebuild covers every watch; the next round reads the new snapshot.
                let _ = control.refresh(&trigger).await;
                break;
            }
        }
    }
}

/// How long to sleep between looks: the shortest poll interval, at most `IDLE_TICK`.
fn tick(watches: &[Watch]) -> Duration {
    watches
        .iter()
        .map(|w| w.interval)
        .min()
        .unwrap_or(IDLE_TICK)
        .min(IDLE_TICK)
}

/// Whether `watch` needs a rebuild, and why.
async fn check(control: &Arc<Control>, watch: &Watch) -> Option<String> {
    let sources = control.snapshot.load().sources.clone();
    match &watch.running {
        Some(running) => match sources.resolve(&watch.plugin.source).await {
            Ok(digest) if digest != *running => {
                tracing::info!(plugin = %watch.plugin.name, source = %watch.plugin.source,
                    from = %running, to = %digest, "followed tag moved");
                Some(format!("tag {} moved to {digest}", watch.plugin.source))
            }
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(plugin = %watch.plugin.name, error = %err,
                    "cannot resolve a followed tag; will try again");
                None
            }
        },
        None => match sources.fetch(&watch.plugin).await {
            Ok(_) => Some(format!("{} can be fetched now", watch.plugin.source)),
            Err(err) => {
                tracing::debug!(plugin = %watch.plugin.name, error = %err, "still cannot fetch");
                None
            }
        },
    }
}
