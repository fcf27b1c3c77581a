//! The control socket is reachable by every member of group `shield`: any
//! bytes may arrive. Framing and decoding must fail cleanly, never panic,
//! and whatever decodes must survive encode → decode unchanged (otherwise
//! shieldctl and the agent could each read a request differently).
//!
//! The input is used twice: as one frame's body, and as a stream of frames
//! read by both the blocking and the async reader, which must agree.
#![no_main]

use std::{
    io::Cursor,
    pin::pin,
    task::{Context, Poll, Waker},
};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shield_user::control::{
    frame::{FrameError, MAX_REQUEST_BYTES, read_frame, read_frame_async, write_frame},
    protocol::{decode_request, decode_response, encode_request, encode_response},
};

/// Decodes `body` both ways; whatever decodes must round-trip.
fn decode(body: &[u8]) {
    if let Ok(req) = decode_request(body) {
        let wire = encode_request(&req).expect("a decoded request encodes");
        let back = decode_request(&wire)
            .unwrap_or_else(|e| panic!("{req:?} encoded as {wire:?} does not decode: {e}"));
        assert_eq!(back, req, "request changed in a round trip");
        assert_eq!(encode_request(&back).unwrap(), wire, "encoding not stable");
    }
    // shieldctl reads responses from the agent; a bad one must not crash it.
    if let Ok(resp) = decode_response(body) {
        let wire = encode_response(&resp).expect("a decoded response encodes");
        let back = decode_response(&wire)
            .unwrap_or_else(|e| panic!("{resp:?} encoded as {wire:?} does not decode: {e}"));
        // Floats may move by an ulp: serde_json parses them fast rather
        // than exactly (its `float_roundtrip` feature is off), which is
        // harmless for rates shown to an operator. Everything else must
        // come back as it was.
        let (a, b) = (json(&wire), json(&encode_response(&back).unwrap()));
        assert!(
            same(&a, &b),
            "response changed in a round trip: {a} against {b}"
        );
    }
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("an encoded response is JSON")
}

/// Equal, except that floats need only agree to a few ulps.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Runs a future that reads from memory: it is ready on the first poll.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read from memory waited"),
    }
}

/// Reads `data` as frames of at most `max` bytes until the stream ends or
/// goes wrong, checking each frame against the bytes it came from.
fn frames(data: &[u8], max: usize, decode_bodies: bool) {
    let mut blocking = Cursor::new(data);
    let mut nonblocking: &[u8] = data;
    loop {
        let start = usize::try_from(blocking.position()).unwrap();
        let got = read_frame(&mut blocking, max);
        let got_async = now(read_frame_async(&mut nonblocking, max));
        // Both readers consumed the same bytes and agree on the outcome.
        assert_eq!(
            usize::try_from(blocking.position()).unwrap(),
            data.len() - nonblocking.len()
        );
        match (&got, &got_async) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("readers disagree: {got:?} against {got_async:?}"),
        }
        let rest = &data[start..];
        match got {
            Ok(body) => {
                assert!(body.len() <= max);
                let header = u32::from_be_bytes(rest[..4].try_into().unwrap());
                assert_eq!(usize::try_from(header).unwrap(), body.len());
                let framed = &rest[..4 + body.len()];
                assert_eq!(&framed[4..], body.as_slice());
                let mut out = Vec::new();
                write_frame(&mut out, &body, max).expect("a frame that was read can be written");
                assert_eq!(out, framed, "write_frame does not reproduce the frame");
                if decode_bodies {
                    decode(&body);
                }
            }
            Err(FrameError::Closed) => {
                assert!(rest.is_empty());
                return;
            }
            Err(FrameError::Truncated { expected, got }) => {
                assert!(got < expected);
                assert!(rest.len() < 4 + expected);
                return;
            }
            Err(FrameError::TooLarge { len, max: m }) => {
                assert_eq!(m, max);
                assert!(len > max as u64);
                // Refused from the header alone: the body is not read.
                assert_eq!(blocking.position(), start as u64 + 4);
                return;
            }
            Err(e @ FrameError::Io(_)) => panic!("reading from memory failed: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode(data);
    frames(data, MAX_REQUEST_BYTES, true);
    // A small cap makes the size check bite on short inputs too.
    frames(data, 16, false);
});
