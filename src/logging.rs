//! Structured logs: JSON (default when stdout is not a terminal) or pretty; level from RUST_LOG.
//!
//! The JSON lines carry the same shape as tracing-subscriber's flattened JSON format
//! (`timestamp`, `level`, the event's fields, `target`), written by [`JsonLines`] straight into
//! the line buffer: one event per request is on the hot path, and the stock formatter goes
//! through serde and formats every `%`-field into its own `String` first.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Installs the global subscriber. `to_stdout` is for `run`: its lines (one per request) go into
/// a buffer that a log thread writes out, so a request's thread makes no `write` call of
/// its own; the returned guard writes out what is left when dropped. The other commands keep
/// stdout for their own output and log to stderr directly.
pub fn init(format: Option<LogFormat>, to_stdout: bool) -> Option<LogFlusher> {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let (dispatch, flusher): (tracing::Dispatch, _) = if to_stdout {
        let buffer: &'static LineBuffer = &BUFFER;
        let flusher = LogFlusher::start(buffer);
        let dispatch = match format {
            LogFormat::Json => builder
                .event_format(JsonLines)
                .with_writer(move || buffer)
                .finish()
                .into(),
            LogFormat::Pretty => builder.with_writer(move || buffer).finish().into(),
        };
        (dispatch, flusher)
    } else {
        let dispatch = match format {
            LogFormat::Json => builder
                .event_format(JsonLines)
                .with_writer(std::io::stderr)
                .finish()
                .into(),
            LogFormat::Pretty => builder.with_writer(std::io::stderr).finish().into(),
        };
        (dispatch, None)
    };
    if tracing::dispatcher::set_global_default(dispatch).is_ok()
        && log::set_boxed_logger(Box::new(tracing_log::LogTracer::new())).is_ok()
    {
        let level = tracing::level_filters::LevelFilter::current()
            .max(tracing::level_filters::LevelFilter::ERROR);
        log::set_max_level(tracing_log::AsLog::as_log(&level));
    }
    flusher
}

/// How often the log thread writes out the buffered lines (as nginx's `access_log ... flush=`).
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Buffered bytes at most. When stdout stalls (a stuck log pipe) and the buffer is full, lines are
/// dropped and counted rather than stalling the requests that log them.
const BUFFER_BYTES: usize = 4 << 20;

/// The lines of `run` not written yet. One lock per line, held for a copy; the log thread swaps
/// the whole buffer for its spare one and writes it with one call.
struct LineBuffer {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicU64,
}

static BUFFER: LineBuffer = LineBuffer {
    lines: Mutex::new(Vec::new()),
    dropped: AtomicU64::new(0),
};

impl LineBuffer {
    /// Swaps the buffered lines into `spare` (empty), whose allocation the buffer takes over.
    fn swap(&self, spare: &mut Vec<u8>) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *lines, spare);
    }
}

/// Log lines dropped so far because the buffer was full.
pub fn dropped_lines() -> u64 {
    BUFFER.dropped.load(Ordering::Relaxed)
}

impl std::io::Write for &'static LineBuffer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() + line.len() > BUFFER_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log thread. Dropping it writes out what is buffered and stops the thread.
pub struct LogFlusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogFlusher {
    fn start(buffer: &'static LineBuffer) -> Option<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hookgate-log".into())
            .spawn(move || {
                let (stopped, wake) = &*stopping;
                let mut lines = Vec::new();
                loop {
                    // Every FLUSH_EVERY, or at once when told to stop: then a last write.
                    let done = {
                        let stopped = stopped.lock().unwrap_or_else(|p| p.into_inner());
                        *wake
                            .wait_timeout_while(stopped, FLUSH_EVERY, |stopped| !*stopped)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    };
                    buffer.swap(&mut lines);
                    if !lines.is_empty() {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&lines).and_then(|()| out.flush());
                        lines.clear();
                    }
                    if done {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LogFlusher {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One JSON object per event: `{"timestamp":…,"level":…,<fields>,"target":…}`.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events bridged from the `log` crate (Pingora logs that way) carry their real target in
        // `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(&mut writer, SystemTime::now())?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = JsonFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, format_args!("{}", meta.target()))?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct JsonFields<'w, W> {
    out: &'w mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = (|| {
            self.out.write_str(",")?;
            string(self.out, format_args!("{}", field.name()))?;
            self.out.write_str(":")?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |o| write!(o, "{value}"));
        } else {
            self.field(field, |o| o.write_str("null"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |o| write!(o, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |o| write!(o, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |o| write!(o, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.field(field, |o| write!(o, "\"{value}\""));
        } else {
            self.field(field, |o| string(o, format_args!("{value}")));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |o| string(o, format_args!("{value}")));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |o| string(o, format_args!("{value:?}")));
    }
}

/// RFC 3339 UTC with microseconds, like `2026-11-28T16:38:22.391384Z`. The part up to the
/// second is formatted once per second and thread.
fn timestamp(out: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    use std::cell::RefCell;
    use std::time::UNIX_EPOCH;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let whole = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            *text = humantime::format_rfc3339_seconds(whole).to_string();
            text.pop(); // the trailing `Z`
            *cached = secs;
        }
        write!(out, "{text}.{:06}Z", since.subsec_micros())
    })
}

/// Writes `value` as a JSON string, escaping as it goes.
fn string(out: &mut impl fmt::Write, value: fmt::Arguments<'_>) -> fmt::Result {
    struct Escaping<'a, W>(&'a mut W);
    impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let mut plain = 0;
            for (i, c) in s.char_indices() {
                let escaped = match c {
                    '"' => "\\\"",
                    '\\' => "\\\\",
                    '\n' => "\\n",
                    '\r' => "\\r",
                    '\t' => "\\t",
                    c if (c as u32) < 0x20 => "",
                    _ => continue,
                };
                self.0.write_str(&s[plain..i])?;
                if escaped.is_empty() {
                    write!(self.0, "\\u{:04x}", c as u32)?;
                } else {
                    self.0.write_str(escaped)?;
                }
                plain = i + c.len_utf8();
            }
            self.0.write_str(&s[plain..])
        }
    }
    out.write_char('"')?;
    Escaping(out).write_fmt(value)?;
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn every_kind_of_field_is_valid_json() {
        let addr: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let got = lines(|| {
            tracing::info!(
                target: "hookgate::request",
                request_id = %"id-1",
                client = %addr,
                quoted = "a \"b\"\\c\n\u{1}é",
                status = 200u16,
                delta = -3i64,
                duration_ms = 0.25,
                nan = f64::NAN,
                flag = true,
                upstream_status = Some(502u16),
                missing = None::<u16>,
                debug = ?vec!["x"],
                "request"
            );
        });
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!(e["level"], "INFO");
        assert_eq!(e["message"], "request");
        assert_eq!(e["target"], "hookgate::request");
        assert_eq!(e["request_id"], "id-1");
        assert_eq!(e["client"], "2001:db8::1");
        assert_eq!(e["quoted"], "a \"b\"\\c\n\u{1}é");
        assert_eq!(e["status"], 200);
        assert_eq!(e["delta"], -3);
        assert_eq!(e["duration_ms"], 0.25);
        assert!(e["nan"].is_null());
        assert_eq!(e["flag"], true);
        assert_eq!(e["upstream_status"], 502);
        assert!(e.get("missing").is_none(), "an absent Option is left out");
        assert_eq!(e["debug"], "[\"x\"]");
        let ts = e["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
    }

    #[test]
    fn timestamps_have_microseconds_and_follow_the_clock() {
        let at = |secs: u64, micros: u64| {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            let mut out = String::new();
            timestamp(&mut out, t).unwrap();
            out
        };
        assert_eq!(at(1_795_883_902, 391_384), "2026-11-28T16:38:22.391384Z");
        assert_eq!(at(1_795_883_902, 7), "2026-11-28T16:38:22.000007Z");
        assert_eq!(at(1_795_883_903, 0), "2026-11-28T16:38:23.000000Z");
        assert_eq!(at(0, 1), "1970-01-01T00:00:00.000001Z");
    }
}
