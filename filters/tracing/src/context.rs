//! Trace contexts on the wire: W3C Trace Context (`traceparent`, `tracestate`) and Zipkin's B3
//! in its single-header (`b3`) and multi-header (`x-b3-*`) forms — parsing what a request
//! brings and formatting what goes upstream. Pure functions over strings; nothing here talks to
//! the host.
//!
//! References: W3C Trace Context §3.2 (`traceparent`: `version-traceid-parentid-flags`,
//! lowercase hex, all-zero ids invalid, version `ff` invalid, a future version may append
//! fields after a `-`), and openzipkin/b3-propagation (`b3: {traceid}-{spanid}-{sampled}-
//! {parentspanid}`, 64- or 128-bit trace ids, a lone sampling state `0`/`1`/`d`).

use std::fmt;

/// A 128-bit trace id, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

impl TraceId {
    /// 32 lowercase hex digits, not all zero.
    pub fn parse(text: &str) -> Option<TraceId> {
        parse_hex::<16>(text)
            .filter(|b| b.iter().any(|&x| x != 0))
            .map(TraceId)
    }

    /// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, left-padded with zeros).
    pub fn parse_b3(text: &str) -> Option<TraceId> {
        if text.len() == 16 {
            let low = parse_hex::<8>(text)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            return Some(TraceId(id)).filter(|t| t.0.iter().any(|&x| x != 0));
        }
        TraceId::parse(text)
    }

    /// The id's low 64 bits, as the ratio sampler reads them (random in every id format).
    pub fn low(&self) -> u64 {
        let mut low = [0u8; 8];
        low.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(low)
    }
}

impl SpanId {
    /// 16 lowercase hex digits, not all zero.
    pub fn parse(text: &str) -> Option<SpanId> {
        parse_hex::<8>(text)
            .filter(|b| b.iter().any(|&x| x != 0))
            .map(SpanId)
    }
}

/// What a request brought: the caller's span, and the caller's sampling decision if it made
/// one (B3 may defer it, or send a decision without ids).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Incoming {
    pub parent: Option<Remote>,
    pub sampled: Option<bool>,
}

/// The caller's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The W3C `tracestate` that came with a `traceparent`, as received (empty: none).
    pub trace_state: String,
}

/// A W3C `traceparent` value; `None` if it breaks the format (then the request starts a new
/// trace, and its `tracestate` is discarded).
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId, u8)> {
    let value = value.trim_matches([' ', '\t']);
    let bytes = value.as_bytes();
    if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let [version] = parse_hex::<1>(&value[..2])?;
    match version {
        0xff => return None,
        // Version 00 is exactly 55 characters; a later version may carry more fields after
        // another `-`, which this parser does not read.
        0x00 if bytes.len() != 55 => return None,
        _ if bytes.len() > 55 && bytes[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = TraceId::parse(&value[3..35])?;
    let span_id = SpanId::parse(&value[36..52])?;
    let [flags] = parse_hex::<1>(&value[53..55])?;
    Some((trace_id, span_id, flags))
}

/// The `traceparent` for a span: version 00, the sampled flag only.
pub fn format_traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled))
}

/// A B3 sampling state: `1` or `d` (debug) sample, `0` does not; `true`/`false` are read
/// too, as some Zipkin clients send them in `x-b3-sampled`.
fn parse_b3_sampled(text: &str) -> Option<Option<bool>> {
    match text {
        "1" | "d" | "true" => Some(Some(true)),
        "0" | "false" => Some(Some(false)),
        _ => None,
    }
}

/// A single `b3` header: `{traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or a lone
/// sampling state. `None` if malformed.
pub fn parse_b3_single(value: &str) -> Option<Incoming> {
    let value = value.trim();
    let fields: Vec<&str> = value.split('-').collect();
    match fields.as_slice() {
        [state] => Some(Incoming {
            parent: None,
            sampled: parse_b3_sampled(state)?,
        }),
        [trace, span, rest @ ..] if rest.len() <= 2 => {
            let trace_id = TraceId::parse_b3(trace)?;
            let span_id = SpanId::parse(span)?;
            let sampled = match rest.first() {
                Some(state) => parse_b3_sampled(state)?,
                None => None,
            };
            if let Some(parent) = rest.get(1) {
                SpanId::parse(parent)?;
            }
            Some(Incoming {
                parent: Some(Remote {
                    trace_id,
                    span_id,
                    trace_state: String::new(),
                }),
                sampled,
            })
        }
        _ => None,
    }
}

/// The `x-b3-*` headers (`get` answers a header's value): trace and span id together, or
/// neither; `x-b3-flags: 1` (debug) means sampled. `None` if malformed or absent.
pub fn parse_b3_multi(get: impl Fn(&str) -> Option<String>) -> Option<Incoming> {
    let trace = get("x-b3-traceid");
    let span = get("x-b3-spanid");
    let debug = get("x-b3-flags").is_some_and(|f| f.trim() == "1");
    let sampled = match get("x-b3-sampled") {
        Some(s) => parse_b3_sampled(s.trim())?,
        None => None,
    };
    let sampled = if debug { Some(true) } else { sampled };
    let parent = match (trace, span) {
        (Some(trace), Some(span)) => Some(Remote {
            trace_id: TraceId::parse_b3(trace.trim())?,
            span_id: SpanId::parse(span.trim())?,
            trace_state: String::new(),
        }),
        (None, None) if sampled.is_some() => None,
        _ => return None,
    };
    Some(Incoming { parent, sampled })
}

/// The single `b3` header for a span.
pub fn format_b3_single(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
    format!("{trace_id}-{span_id}-{}", u8::from(sampled))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_round_trips() {
        let value = format!("00-{TRACE}-{SPAN}-01");
        let (trace, span, flags) = parse_traceparent(&value).expect("valid");
        assert_eq!(trace.to_string(), TRACE);
        assert_eq!(span.to_string(), SPAN);
        assert_eq!(flags, 1);
        assert_eq!(format_traceparent(trace, span, true), value);
        assert_eq!(
            format_traceparent(trace, span, false),
            format!("00-{TRACE}-{SPAN}-00")
        );
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            String::new(),
            format!("00-{TRACE}-{SPAN}"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{TRACE}-{SPAN}-0x"),
            format!("0g-{TRACE}-{SPAN}-01"),
            format!("00_{TRACE}-{SPAN}-01"),
            format!("01-{TRACE}-{SPAN}-01x"),
        ] {
            assert_eq!(parse_traceparent(&bad), None, "{bad}");
        }
        // A later version may append fields.
        assert!(parse_traceparent(&format!("01-{TRACE}-{SPAN}-01-later")).is_some());
        assert!(parse_traceparent(&format!("01-{TRACE}-{SPAN}-01")).is_some());
    }

    #[test]
    fn b3_single_forms() {
        let full =
            parse_b3_single(&format!("{TRACE}-{SPAN}-1-{}", "05e3ac9a4f6e3b90")).expect("valid");
        let parent = full.parent.expect("ids");
        assert_eq!(parent.trace_id.to_string(), TRACE);
        assert_eq!(parent.span_id.to_string(), SPAN);
        assert_eq!(full.sampled, Some(true));

        let deferred = parse_b3_single(&format!("{TRACE}-{SPAN}")).expect("valid");
        assert_eq!(deferred.sampled, None);

        let short = parse_b3_single(&format!("a3ce929d0e0e4736-{SPAN}-d")).expect("valid");
        assert_eq!(
            short.parent.expect("ids").trace_id.to_string(),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert_eq!(short.sampled, Some(true));

        assert_eq!(
            parse_b3_single("0"),
            Some(Incoming {
                parent: None,
                sampled: Some(false)
            })
        );
        for bad in [
            "",
            "2",
            "abc-def",
            &format!("{TRACE}-{SPAN}-2"),
            &format!("{TRACE}-{SPAN}-1-zz"),
            &format!("{TRACE}-{SPAN}-1-{SPAN}-x"),
        ] {
            assert_eq!(parse_b3_single(bad), None, "{bad}");
        }
    }

    #[test]
    fn b3_multi_forms() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let got = parse_b3_multi(headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]))
        .expect("valid");
        assert_eq!(got.sampled, Some(false));
        assert_eq!(
            got.parent.expect("ids").trace_id.to_string(),
            "0000000000000000a3ce929d0e0e4736"
        );
        let debug = parse_b3_multi(headers(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]))
        .expect("valid");
        assert_eq!(debug.sampled, Some(true), "debug wins");
        assert_eq!(
            parse_b3_multi(headers(&[("x-b3-sampled", "1")])),
            Some(Incoming {
                parent: None,
                sampled: Some(true)
            })
        );
        assert_eq!(parse_b3_multi(headers(&[])), None);
        assert_eq!(parse_b3_multi(headers(&[("x-b3-traceid", TRACE)])), None);
        assert_eq!(
            parse_b3_multi(headers(&[("x-b3-traceid", TRACE), ("x-b3-spanid", "xyz")])),
            None
        );
    }
}
