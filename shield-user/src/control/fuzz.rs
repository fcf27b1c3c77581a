//! Property tests: whatever bytes or text arrive, decoding and parsing
//! return errors, never panic, and valid values survive a round trip.

use std::{io::Cursor, net::Ipv4Addr};

use proptest::prelude::*;

use super::{
    frame::{FrameError, read_frame},
    protocol::{Request, decode_request, decode_response, encode_request},
    units::{RateSpec, format_count, format_duration, parse_duration},
};
use crate::net::Cidr;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        match read_frame(&mut Cursor::new(&bytes), 64) {
            Ok(body) => prop_assert!(body.len() <= 64 && body.len() + 4 <= bytes.len()),
            Err(FrameError::TooLarge { len, .. }) => prop_assert!(len > 64),
            Err(_) => {}
        }
    }

    #[test]
    fn corrupted_requests_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), ttl in any::<u64>()) {
        let req = Request::BanAdd {
            net: "198.51.100.0/24".parse().unwrap(),
            ttl_secs: Some(ttl),
            reason: Some("why".into()),
        };
        let mut bytes = encode_request(&req).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = decode_request(&bytes);
    }

    #[test]
    fn networks_and_reasons_round_trip(addr in any::<u32>(), len in 0u8..=32, reason in ".*", ttl in any::<Option<u64>>()) {
        let net = Cidr::truncating(Ipv4Addr::from(addr).into(), len);
        let req = Request::BanAdd { net, ttl_secs: ttl, reason: Some(reason) };
        prop_assert_eq!(decode_request(&encode_request(&req).unwrap()).unwrap(), req);
    }

    #[test]
    fn unit_parsers_never_panic(s in "\\PC{0,24}") {
        let _ = parse_duration(&s);
        let _ = s.parse::<RateSpec>();
    }

    #[test]
    fn durations_render_and_parse_back(secs in 0u64..=10 * 365 * 86_400) {
        let back = parse_duration(&format_duration(secs)).unwrap().as_secs();
        // Two units are shown, so at most the third is lost: under a day
        // of a multi-day value, under an hour of hours, and so on.
        prop_assert!(back <= secs);
        prop_assert!(secs - back < 3600 || secs - back < secs / 24 + 1);
    }

    #[test]
    fn counts_render_compactly(n in any::<f64>()) {
        let s = format_count(n);
        prop_assert!(s.len() <= 12, "{s}");
    }
}
