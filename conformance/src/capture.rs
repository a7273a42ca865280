//! Where observations come from: every line a filter logs reaches `tracing` (target `wasm`,
//! field `plugin`) through the host's default log sink — in the SDK harness and in the proxy
//! alike — so one global subscriber layer collects them, in process, for both environments.
//! Plugin names are unique per run ([`unique`]), which keeps runs that overlap apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::error::{Error, Result};

/// One line a filter logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub plugin: String,
    /// `trace`, `debug`, `info`, `warn` or `error` (`tracing` has no `critical`).
    pub level: &'static str,
    pub message: String,
}

static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());

fn lines() -> std::sync::MutexGuard<'static, Vec<Line>> {
    LINES.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Fields {
    plugin: String,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_string(),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "plugin" => self.plugin = format!("{value:?}"),
            // A format string's arguments print as the formatted text.
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

struct Capture;

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::TRACE => "trace",
            Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warn",
            Level::ERROR => "error",
        };
        lines().push(Line {
            plugin: fields.plugin,
            level,
            message: fields.message,
        });
    }
}

/// Installs the capture as the process's `tracing` subscriber (once). Filters see every
/// level enabled, so `proxy_get_log_level` answers TRACE in both environments.
pub fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let layer = Capture.with_filter(Targets::new().with_target("wasm", Level::TRACE));
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .map_err(|e| format!("another tracing subscriber is installed: {e}"))
        })
        .clone()
        .map_err(|e| Error::new("installing the log capture", e))
}

/// A plugin name no other run in this process uses: `<base>-<n>`.
pub fn unique(base: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{base}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The lines `plugin` logged so far.
pub fn of(plugin: &str) -> Vec<Line> {
    lines()
        .iter()
        .filter(|l| l.plugin == plugin)
        .cloned()
        .collect()
}

/// Whether `plugin` logged an observation `id` (any value).
pub fn has(plugin: &str, id: &str) -> bool {
    let prefix = format!("observed {id} ");
    let exact = format!("observed {id}");
    lines()
        .iter()
        .any(|l| l.plugin == plugin && (l.message.starts_with(&prefix) || l.message == exact))
}

/// Waits until `plugin` logged observation `id`, polling; `false` if `limit` passed first.
pub async fn wait_for(plugin: &str, id: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if has(plugin, id) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
