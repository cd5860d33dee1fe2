//! Log set-up for Fanout's programs: what is logged by default, where it goes and when it is
//! coloured.
//!
//! - **Filter.** `RUST_LOG` when it is set (it replaces the default whole); otherwise `info`
//!   for Fanout's own crates and `warn` for libraries, with `rtc_dtls` at `error`: that crate
//!   warns "Unsupported Extension Type" three times per browser handshake (Chrome's hellos
//!   carry extensions it does not parse), which says nothing about our handshakes.
//! - **Output.** Standard error, the usual place for a program's diagnostics.
//! - **Colour.** Only when standard error is a terminal and `NO_COLOR` is unset or empty:
//!   escape codes in a redirected log, a file or a pod's log, are noise.

use std::io::IsTerminal;

/// Libraries whose warnings are routine for a media server, and the level they log at by
/// default instead.
const QUIETER_LIBRARIES: &[(&str, &str)] = &[("rtc_dtls", "error")];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// The default filter: libraries at `warn` (some quieter, see [`QUIETER_LIBRARIES`]) and each
/// of `own_crates` (their tracing targets, e.g. `fanout_worker`) at `info`.
pub fn default_directives(own_crates: &[&str]) -> String {
    let mut directives = vec!["warn".to_owned()];
    directives.extend(QUIETER_LIBRARIES.iter().map(|(target, level)| format!("{target}={level}")));
    directives.extend(own_crates.iter().map(|target| format!("{target}=info")));
    directives.join(",")
}

/// Whether to colour the output: on a terminal, unless `NO_COLOR` says otherwise.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Installs the global subscriber (see the module docs). `own_crates` are the tracing targets
/// logged at `info` by default.
pub fn init(format: LogFormat, own_crates: &[&str]) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_directives(own_crates)));
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `emit` logs, through the default filter, as text without colour.
    fn logged_by_default(emit: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(default_directives(&["fanout_worker"])))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_default_filter_drops_dtls_extension_warnings_and_keeps_fanouts_info() {
        let log = logged_by_default(|| {
            tracing::warn!(target: "rtc_dtls::handshake::handshake_message_client_hello", "Unsupported Extension Type 0 17");
            tracing::error!(target: "rtc_dtls::conn", "handshake failed for real");
            tracing::info!(target: "hyper::proto", "a library's chatter");
            tracing::warn!(target: "hyper::proto", "a library's warning");
            tracing::info!(target: "fanout_worker::server", "worker started");
            tracing::debug!(target: "fanout_worker::server", "details");
        });
        assert!(!log.contains("Unsupported Extension Type"), "{log}");
        assert!(log.contains("handshake failed for real"), "{log}");
        assert!(!log.contains("chatter"), "{log}");
        assert!(log.contains("a library's warning"), "{log}");
        assert!(log.contains("worker started"), "{log}");
        assert!(!log.contains("details"), "{log}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(std::ffi::OsStr::new(""))));
        assert!(!use_colour(true, Some(std::ffi::OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn formats_are_text_or_json() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert!("yaml".parse::<LogFormat>().unwrap_err().contains("text or json"));
    }
}
