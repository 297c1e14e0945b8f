//! W3C trace context (`traceparent`): kept when a request carries a valid one, made otherwise, so
//! one delivery can be followed from the sender through hookgate to the app.

use std::fmt;

/// A `traceparent` value: `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: u128,
    parent_id: u64,
    flags: u8,
    /// Taken from the request (passed on as sent, with its `tracestate`) rather than made here.
    pub given: bool,
}

impl Traceparent {
    /// A fresh trace, sampled.
    pub fn new() -> Self {
        Self {
            trace_id: rand::random::<u128>() | 1,
            parent_id: rand::random::<u64>() | 1,
            flags: 1,
            given: false,
        }
    }

    /// The request's `traceparent` when it is valid (W3C Trace Context level 1, §3.2).
    pub fn parse(value: Option<&[u8]>) -> Option<Self> {
        let v = value?;
        // Version 00 is exactly 55 characters; a later version may append fields after a '-'.
        if v.len() < 55 || (v.len() > 55 && (&v[..2] == b"00" || v[55] != b'-')) {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex(&v[..2])? as u8;
        let trace_id = hex(&v[3..35])?;
        let parent_id = hex(&v[36..52])? as u64;
        let flags = hex(&v[53..55])? as u8;
        if version == 0xff || trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
            given: true,
        })
    }
}

impl Traceparent {
    /// The span the value names (the sender's, or hookgate's own once it records one).
    pub fn parent_id(&self) -> u64 {
        self.parent_id
    }

    /// Whether the trace is being recorded (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Span `span_id` of a recorded trace, as the next hop receives it.
    pub fn recorded(trace_id: u128, span_id: u64) -> Self {
        Self {
            trace_id,
            parent_id: span_id,
            flags: 1,
            given: false,
        }
    }

    /// A fresh trace that is not recorded: the sampler said no, and downstream should not either.
    pub fn unsampled() -> Self {
        Self {
            flags: 0,
            ..Self::new()
        }
    }
}

/// The `traceparent` line of header lines in wire format (`Name: value\r\n` each): its byte
/// range and value.
fn line_in(headers: &[u8]) -> Option<(std::ops::Range<usize>, Option<Traceparent>)> {
    let mut start = 0;
    for line in headers.split_inclusive(|&b| b == b'\n') {
        let end = start + line.len();
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        if let Some(colon) = text.iter().position(|&b| b == b':') {
            if text[..colon].eq_ignore_ascii_case(b"traceparent") {
                return Some((
                    start..end,
                    Traceparent::parse(Some(text[colon + 1..].trim_ascii())),
                ));
            }
        }
        start = end;
    }
    None
}

/// The trace context stored with a queued delivery's headers.
pub fn stored(headers: &[u8]) -> Option<Traceparent> {
    line_in(headers)?.1
}

/// The stored header lines with their `traceparent` replaced by `with`.
pub fn restamped(headers: &[u8], with: &Traceparent) -> Vec<u8> {
    let line = format!("traceparent: {with}\r\n");
    match line_in(headers) {
        Some((range, _)) => [
            &headers[..range.start],
            line.as_bytes(),
            &headers[range.end..],
        ]
        .concat(),
        None => [headers, line.as_bytes()].concat(),
    }
}

impl Default for Traceparent {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Lower-case hex only, as the spec requires.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let t = Traceparent::parse(Some(VALID)).unwrap();
        assert_eq!(t.to_string().as_bytes(), VALID);
        assert_eq!(
            format!("{:032x}", t.trace_id),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(t.given);
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"garbage",
        ] {
            assert_eq!(
                Traceparent::parse(Some(bad)),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let future = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(Traceparent::parse(Some(future)).is_some());
    }

    #[test]
    fn a_stored_traceparent_is_found_and_restamped_in_place() {
        let headers = b"Host: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-A: 1\r\n";
        let t = stored(headers).unwrap();
        assert_eq!(t.parent_id(), 0x00f067aa0ba902b7);
        let child = Traceparent::recorded(t.trace_id, 0x1234);
        let again = restamped(headers, &child);
        assert_eq!(
            String::from_utf8(again.clone()).unwrap(),
            "Host: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01\r\nX-A: 1\r\n"
        );
        assert_eq!(stored(&again).unwrap().parent_id(), 0x1234);
        assert_eq!(stored(b"Host: h\r\n"), None);
    }

    #[test]
    fn a_new_one_is_valid() {
        let t = Traceparent::new();
        let again = Traceparent::parse(Some(t.to_string().as_bytes())).unwrap();
        assert_eq!(again.trace_id, t.trace_id);
        assert!(!t.given);
    }
}
