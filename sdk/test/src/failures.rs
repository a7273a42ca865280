//! Failures the host reports only to its telemetry. Ending a stream (`proxy_on_done`,
//! `proxy_on_log`, `proxy_on_delete`) happens when the host's `HttpStream` is dropped, which
//! cannot return an error: a trap there fails the replica and is told as the host's
//! `filter failed` warning (fields `plugin`, `kind`, `error`) and nowhere else. So that
//! [`crate::Stream::finish`] can report it, the harness watches for that event on the
//! current thread while the stream ends — the drop runs on this thread, synchronously, and a
//! scoped subscriber sees no other thread's events.
//!
//! A host method that ends a stream and returns the failure would replace this.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use wasmesh_host::{FailureKind, FilterFailure};

/// Where the host's `filter failed` warning comes from.
const HOST_TARGET: &str = "wasmesh_host::plugin";

/// Runs `f`, and answers the failure the host reported for `plugin` while it ran, if any.
pub(crate) fn watch(plugin: &str, f: impl FnOnce()) -> Option<FilterFailure> {
    let seen = Arc::new(Mutex::new(None));
    let watcher = Watcher {
        plugin: plugin.to_string(),
        seen: seen.clone(),
    };
    tracing::subscriber::with_default(watcher, f);
    seen.lock().unwrap_or_else(|e| e.into_inner()).take()
}

struct Watcher {
    plugin: String,
    seen: Arc<Mutex<Option<FilterFailure>>>,
}

/// The fields of one event, as text.
#[derive(Default)]
struct Fields {
    plugin: Option<String>,
    kind: Option<String>,
    error: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "plugin" => &mut self.plugin,
            "kind" => &mut self.kind,
            "error" => &mut self.error,
            _ => return,
        };
        *slot = Some(value.to_string());
    }
}

fn kind(name: &str) -> FailureKind {
    [
        FailureKind::Trap,
        FailureKind::Timeout,
        FailureKind::Limit,
        FailureKind::Unavailable,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
    .unwrap_or(FailureKind::Trap)
}

impl Subscriber for Watcher {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == HOST_TARGET && *metadata.level() == Level::WARN
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (Some(plugin), Some(kind_name), Some(message)) =
            (fields.plugin, fields.kind, fields.error)
        else {
            return;
        };
        if plugin != self.plugin {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // The first failure is the one that ended the callbacks.
        seen.get_or_insert(FilterFailure {
            kind: kind(&kind_name),
            message,
        });
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
