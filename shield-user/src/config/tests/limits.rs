//! Rates and bursts, and the burst a clock tick needs.

use super::*;

#[test]
fn rates_in_the_file() {
    let c = ok("[limits]\npackets = \"300/min\"\nconnections = \"7/h\"\n");
    assert_eq!(c.limits.packets, Some(rate(300, 60)));
    assert_eq!(c.limits.connections, Some(rate(7, 3600)));
    only_at("[limits]\npackets = \"0/s\"\n", 2, 11, "admits nothing");
    only_at(
        "[limits]\npackets = \"10/day\"\n",
        2,
        11,
        "unknown unit `day`",
    );
}

#[test]
fn bursts_are_at_least_one() {
    only_at("[limits]\npacket_burst = 0\n", 2, 16, "at least 1");
    only_at("[limits]\nconnection_burst = -3\n", 2, 20, "at least 1");
}

#[test]
fn bursts_below_a_ticks_worth_are_rejected() {
    // 100000/s is one packet every 10 us: a 4 ms tick holds 400 of them.
    assert_eq!(
        only("[limits]\npackets = \"100000/s\"\npacket_burst = 399\n"),
        "3:16: `packet_burst` = 399 is too small for packets = \"100000/s\": bursts below 400 \
         cannot hold the rate with the kernel's 4 ms clock tick; raise it to at least 400"
    );
    ok("[limits]\npackets = \"100000/s\"\npacket_burst = 400\n");

    // A tier's burst is judged against the rate it inherits from [limits].
    let text = "[limits]\nconnections = \"1000/s\"\nconnection_burst = 2\n\
                [[tier]]\nname = \"t\"\ncidrs = [\"10.0.0.0/8\"]\nconnection_burst = 3\n";
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!((e[0].line, e[0].column), (3, 20));
    assert_eq!((e[1].line, e[1].column), (7, 20));
    assert!(
        e[1].message
            .contains("connections = \"1000/s\" (inherited from [limits])")
            && e[1].message.contains("bursts below 4 "),
        "{}",
        e[1].message
    );

    // Its own rate, when it has one, is what counts.
    ok("[[tier]]\nname = \"t\"\ncidrs = [\"10.0.0.0/8\"]\npackets = \"10/s\"\npacket_burst = 1\n");
    // A port rule's too.
    only_at(
        "[[port]]\nname = \"p\"\nproto = \"udp\"\nports = [53]\npackets = \"1000000/s\"\npacket_burst = 100\n",
        6,
        16,
        "bursts below 4000",
    );
    // Unlimited needs no burst to speak of.
    ok("[limits]\npackets = \"unlimited\"\npacket_burst = 1\n");
    // Bursts that were not written are not judged: only what the operator
    // wrote can be pointed at.
    ok("[[tier]]\nname = \"t\"\ncidrs = [\"10.0.0.0/8\"]\npackets = \"10000000/s\"\n");
    // The tick decides.
    assert!(
        parse(
            "[limits]\npackets = \"100000/s\"\npacket_burst = 399\n",
            Path::new("x"),
            1_000_000
        )
        .is_ok()
    );
    let e = parse(
        "[limits]\npackets = \"1000/s\"\npacket_burst = 5\n",
        Path::new("x"),
        10_000_000,
    )
    .unwrap_err();
    assert!(e.to_string().contains("10 ms clock tick"), "{e}");
}
