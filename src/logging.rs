//! Log hygiene: what a caller sends may be logged, but never as a forged line,
//! a terminal escape sequence or 60 KB of header; refusals, which a hostile
//! caller can trigger at will, are logged at a bounded rate; colour only when the
//! log is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest caller-supplied field written to a log, in characters.
pub const MAX_FIELD_CHARS: usize = 128;

/// `text` made safe for a log line: control characters (newlines, ESC, DEL, the
/// C1 range) and Unicode bidi overrides escaped as `\n`, `\u{1b}`…, and cut at
/// [`MAX_FIELD_CHARS`] characters with the original length noted.
pub fn field(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_FIELD_CHARS + 16));
    for (count, c) in text.chars().enumerate() {
        if count == MAX_FIELD_CHARS {
            out.push_str(&format!("…({} bytes)", text.len()));
            break;
        }
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that reorder the text around them on a terminal (CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Whether to write ANSI colour to stderr: only to a terminal, and not when
/// `NO_COLOR` is set (<https://no-color.org>).
pub fn ansi_on_stderr(no_color: bool) -> bool {
    !no_color && std::io::stderr().is_terminal()
}

/// At most `burst` log lines per `window`; the rest are counted and reported with
/// the next line that is let through.
#[derive(Debug)]
pub struct Throttle {
    burst: u32,
    window: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Throttle {
    /// `burst` lines per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            state: Mutex::new(ThrottleState {
                window_start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// The refusal logs of the local API: 20 lines per 10 seconds.
    pub fn for_refusals() -> Self {
        Self::new(20, Duration::from_secs(10))
    }

    /// `Some(suppressed since the last line let through)` when a line may be
    /// written now, `None` when it must be dropped.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = s
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            s.window_start = Some(now);
            s.logged = 0;
        }
        if s.logged >= self.burst {
            s.suppressed = s.suppressed.saturating_add(1);
            return None;
        }
        s.logged = s.logged.saturating_add(1);
        Some(std::mem::take(&mut s.suppressed))
    }
}

/// A refusal logged at `warn` through `throttle`, with how many were dropped
/// before it: `refusal!(state.refusals, %peer, host = %field(host), "refused ...")`.
#[macro_export]
macro_rules! refusal {
    ($throttle:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $throttle.admit() {
            tracing::warn!(suppressed, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_forge_lines_or_escape_the_terminal() {
        assert_eq!(field("wg-1"), "wg-1");
        assert_eq!(field("a\nforged=1"), "a\\nforged=1");
        assert_eq!(field("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(field("x\r\u{7f}\u{85}"), "x\\r\\u{7f}\\u{85}");
        assert_eq!(field("ab\u{202e}cd"), "ab\\u{202e}cd");
        assert_eq!(field("héllo"), "héllo");
        let long = "h".repeat(60_000);
        let cut = field(&long);
        assert!(cut.len() < 200 && cut.ends_with("…(60000 bytes)"), "{cut}");
    }

    #[test]
    fn throttle_lets_a_burst_through_then_counts() {
        let t = Throttle::new(2, Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(t.admit_at(now), Some(0));
        assert_eq!(t.admit_at(now), Some(0));
        assert_eq!(t.admit_at(now), None);
        assert_eq!(t.admit_at(now), None);
        let later = now + Duration::from_secs(11);
        assert_eq!(t.admit_at(later), Some(2));
        assert_eq!(t.admit_at(later), Some(0));
    }
}
