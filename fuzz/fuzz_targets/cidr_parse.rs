//! Networks arrive from configs, feeds, the control socket and the command
//! line. Whatever the text, the strict and the normalizing parser must agree
//! with each other, and whatever parses must print as text that parses back
//! to the same network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shield_user::net::{Cidr, CidrError};

/// What holds for every network either parser returns.
fn check(c: Cidr) {
    assert!(c.prefix_len() <= c.max_len(), "{c:?}");
    assert_eq!(c.max_len(), if c.is_v4() { 32 } else { 128 });
    // No host bits: truncating changes nothing and the strict constructor
    // accepts it.
    assert_eq!(Cidr::truncating(c.addr(), c.prefix_len()), c);
    assert_eq!(Cidr::new(c.addr(), c.prefix_len()), Ok(c));
    assert!(c.contains(&c));
    let shown = c.to_string();
    assert_eq!(shown.parse::<Cidr>(), Ok(c), "{shown} does not parse back");
    assert_eq!(Cidr::parse_normalizing(&shown), Ok((c, false)));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let strict = text.parse::<Cidr>();
    let loose = Cidr::parse_normalizing(&text);
    match (&strict, &loose) {
        (Ok(c), Ok((n, fixed))) => {
            assert_eq!(c, n);
            assert!(!fixed, "nothing to normalize in {text:?}");
        }
        // The strict parser's suggestion is exactly what normalizing takes.
        (Err(CidrError::HostBits { suggestion, .. }), Ok((n, fixed))) => {
            assert_eq!(suggestion, n);
            assert!(fixed, "host bits in {text:?} not reported");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "different errors for {text:?}"),
        _ => panic!("the parsers disagree on {text:?}: {strict:?} against {loose:?}"),
    }
    if let Ok((c, _)) = loose {
        check(c);
    }
});
