//! The top-level keys and `[allow]`.

use super::*;

#[test]
fn interfaces() {
    assert_eq!(
        only("interfaces = []\n"),
        "1:14: `interfaces`: an empty interface list: list at least one interface, or omit the key and pass --iface"
    );
    only_at(
        "interfaces = [\"eth0\", \"a-very-long-name0\"]\n",
        1,
        23,
        "at most 15",
    );
    only_at("interfaces = [\"eth/0\"]\n", 1, 15, "cannot contain '/'");
    only_at("interfaces = [\"eth 0\"]\n", 1, 15, "cannot contain ' '");
    only_at("interfaces = [\"\"]\n", 1, 15, "cannot be empty");
    only_at(
        "interfaces = [\"..\"]\n",
        1,
        15,
        "not a valid interface name",
    );
    only_at(
        "interfaces = [\"eth0\", \"eth0\"]\n",
        1,
        23,
        "already listed",
    );
    // 15 bytes is still fine.
    assert_eq!(ok("interfaces = [\"abcdefghijklmno\"]").interfaces.len(), 1);
}

#[test]
fn enumerations_suggest_the_near_miss() {
    assert_eq!(
        only("xdp_mode = \"nativ\"\n"),
        "1:12: `xdp_mode`: \"nativ\" is not one of auto, native, skb; did you mean `native`?"
    );
    only_at("malformed = \"Drop\"\n", 1, 13, "did you mean `drop`?");
    assert_eq!(ok("xdp_mode = \"skb\"").xdp_mode, XdpModeSetting::Skb);
}

#[test]
fn ipv6_prefix_range() {
    assert_eq!(ok("ipv6_prefix = 16").ipv6_prefix, 16);
    assert_eq!(ok("ipv6_prefix = 128").ipv6_prefix, 128);
    only_at("ipv6_prefix = 15\n", 1, 15, "between 16 and 128");
    only_at("ipv6_prefix = 129\n", 1, 15, "between 16 and 128");
    only_at("ipv6_prefix = -64\n", 1, 15, "-64 is out of range");
    only_at(
        "ipv6_prefix = 99999999999999999999999999999999999999999\n",
        1,
        15,
        "far too large",
    );
}

#[test]
fn addresses_and_paths() {
    only_at(
        "metrics_listen = \"localhost:9964\"\n",
        1,
        18,
        "not a socket address",
    );
    only_at(
        "metrics_listen = \"127.0.0.1\"\n",
        1,
        18,
        "not a socket address",
    );
    only_at("state_dir = \"\"\n", 1, 13, "cannot be empty");
    only_at("pin_dir = \"/a\\u0000b\"\n", 1, 11, "NUL");
    let long = format!("control_socket = \"/{}\"\n", "s".repeat(107));
    only_at(&long, 1, 18, "at most 107 bytes");
    let fits = format!("control_socket = \"/{}\"\n", "s".repeat(106));
    assert_eq!(ok(&fits).control_socket.as_os_str().len(), 107);
}

#[test]
fn prefixes_must_be_networks() {
    only_at(
        "[allow]\ncidrs = [\"10.0.0.0/8\", \"192.168.1.1/24\"]\n",
        2,
        24,
        "`192.168.1.1/24` has host bits set; did you mean `192.168.1.0/24`?",
    );
    only_at(
        "[allow]\ncidrs = [\"10.0.0.0/33\"]\n",
        2,
        10,
        "too long for IPv4",
    );
    only_at(
        "[allow]\ncidrs = [\"example.com\"]\n",
        2,
        10,
        "not an IP address or CIDR",
    );
    only_at(
        "[allow]\ncidrs = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
        2,
        24,
        "listed twice (first at 2:10)",
    );
}
