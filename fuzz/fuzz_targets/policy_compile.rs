//! The policy compiler turns the allowlist, tiers and port ACLs into one LPM
//! trie per family, and port rules and limits into tables. Whatever valid
//! config it is given:
//! - the allowlist wins: every address an allow prefix covers is passed as
//!   `allowed` by the pipeline (the host reference model run over the
//!   compiled maps), even with a ban and a feed entry covering everything
//!   and every port under an ACL that admits no one;
//! - nothing else gets through that wall of bans;
//! - no compiled entry is broader than what the config wrote: every trie
//!   entry is one of the config's prefixes, and for any address the
//!   longest matching entry carries exactly the allow bit, tier and ACL
//!   bits the config's prefixes give that address;
//! - every port rule's ports, and only those, are in the port table;
//! - compiling again with the result as the previous policy changes
//!   nothing (ids are stable).
//!
//! The input drives a generator of config text (so parsing and validation
//! run too); configs the validator refuses are skipped.
#![no_main]

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use shield_common::{
    maps::{BAN_FOREVER, PROTO_TCP, PROTO_UDP, SRC_ALLOWED, SourceClass},
    model::{Model, Net, Policy as ModelPolicy},
    reason::{Reason, Verdict},
};
use shield_user::{
    config::{self, Proto},
    net::Cidr,
    policy::{self, Runtime},
};

/// Prefixes come from a few bases so that they nest and overlap often.
const V4_BASES: [[u8; 4]; 4] = [
    [10, 0, 0, 0],
    [10, 1, 2, 0],
    [192, 0, 2, 0],
    [198, 51, 100, 128],
];
const V6_BASES: [u16; 3] = [0x2001, 0xfd00, 0x2a02];

fn cidr(u: &mut Unstructured<'_>) -> Result<Cidr> {
    if u.ratio(2, 3)? {
        let mut a = *u.choose(&V4_BASES)?;
        a[3] = a[3].wrapping_add(u.int_in_range(0..=3)?);
        if u.ratio(1, 4)? {
            a[2] = u.arbitrary()?;
        }
        let len = u.int_in_range(8..=32)?;
        Ok(Cidr::truncating(IpAddr::V4(Ipv4Addr::from(a)), len))
    } else {
        let first = *u.choose(&V6_BASES)?;
        let a = Ipv6Addr::new(
            first,
            0xdb8,
            u.int_in_range(0..=2)?,
            u.int_in_range(0..=2)?,
            0,
            0,
            0,
            u.int_in_range(0..=3)?,
        );
        let len = u.int_in_range(16..=128)?;
        Ok(Cidr::truncating(IpAddr::V6(a), len))
    }
}

/// Up to `max` prefixes, no repeats (a repeat is a config error).
fn cidr_list(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<Cidr>> {
    let n = u.int_in_range(0..=max)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let c = cidr(u)?;
        if seen.insert(c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn quoted(list: &[Cidr]) -> String {
    let items: Vec<String> = list.iter().map(|c| format!("\"{c}\"")).collect();
    format!("[{}]", items.join(", "))
}

fn limits(u: &mut Unstructured<'_>, out: &mut String, syn_ok: bool) -> Result<()> {
    if u.ratio(1, 2)? {
        let n: u16 = u.int_in_range(1..=5000)?;
        let unit = *u.choose(&["s", "min", "h"])?;
        writeln!(out, "packets = \"{n}/{unit}\"").unwrap();
    }
    if u.ratio(1, 3)? {
        // At least 20: below that the validator refuses 5000/s (the fastest
        // rate made here) with a 4 ms clock tick.
        writeln!(out, "packet_burst = {}", u.int_in_range(20u32..=20_000)?).unwrap();
    }
    if syn_ok && u.ratio(1, 3)? {
        writeln!(out, "connections = \"{}/s\"", u.int_in_range(1u16..=500)?).unwrap();
    }
    Ok(())
}

/// A config text and the runtime allowlist (`shieldctl allow add`).
fn generate(u: &mut Unstructured<'_>) -> Result<(String, Vec<Cidr>)> {
    let mut t = String::new();
    writeln!(t, "ipv6_prefix = {}", u.choose(&[48, 56, 64, 128])?).unwrap();
    writeln!(t, "dry_run = {}", u.ratio(1, 5)?).unwrap();
    writeln!(t, "malformed = \"{}\"", u.choose(&["drop", "pass"])?).unwrap();
    writeln!(t, "[allow]\ncidrs = {}", quoted(&cidr_list(u, 4)?)).unwrap();
    t.push_str("[limits]\n");
    limits(u, &mut t, true)?;
    let mut used = BTreeSet::new();
    for i in 0..u.int_in_range(0..=5)? {
        // The same prefix in two tiers is a config error; skip repeats.
        let cidrs: Vec<Cidr> = cidr_list(u, 3)?
            .into_iter()
            .filter(|c| used.insert(*c))
            .collect();
        if cidrs.is_empty() {
            continue;
        }
        writeln!(t, "[[tier]]\nname = \"t{i}\"\ncidrs = {}", quoted(&cidrs)).unwrap();
        limits(u, &mut t, true)?;
    }
    let mut taken = BTreeSet::new();
    for i in 0..u.int_in_range(0..=5)? {
        let proto = *u.choose(&["tcp", "udp"])?;
        let ports: Vec<u16> = (0..u.int_in_range(1..=3)?)
            .map(|_| Ok(*u.choose(&[22u16, 53, 80, 443, 8443, 9000])?))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|p| taken.insert((proto, *p)))
            .collect();
        if ports.is_empty() {
            continue;
        }
        writeln!(
            t,
            "[[port]]\nname = \"p{i}\"\nproto = \"{proto}\"\nports = {ports:?}"
        )
        .unwrap();
        if u.ratio(1, 2)? {
            writeln!(t, "allow_from = {}", quoted(&cidr_list(u, 3)?)).unwrap();
        }
        if u.ratio(1, 4)? {
            t.push_str("dry_run = true\n");
        }
        limits(u, &mut t, proto == "tcp")?;
    }
    Ok((t, cidr_list(u, 2)?))
}

fn net(c: &Cidr) -> Net {
    match c.addr() {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            Net::new(false, b, c.prefix_len())
        }
        IpAddr::V6(a) => Net::new(true, a.octets(), c.prefix_len()),
    }
}

/// The first and the last address of `c`.
fn ends(c: &Cidr) -> [IpAddr; 2] {
    match c.addr() {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(c.prefix_len())).unwrap_or(0);
            [
                IpAddr::V4(a),
                IpAddr::V4(Ipv4Addr::from(u32::from(a) | host)),
            ]
        }
        IpAddr::V6(a) => {
            let host = u128::MAX
                .checked_shr(u32::from(c.prefix_len()))
                .unwrap_or(0);
            [
                IpAddr::V6(a),
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | host)),
            ]
        }
    }
}

/// A TCP SYN (or a UDP datagram) from `src` to `dport`.
fn frame(src: IpAddr, proto: u8, dport: u16) -> Vec<u8> {
    let mut l4 = vec![0u8; if proto == PROTO_TCP { 20 } else { 8 }];
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == PROTO_TCP {
        l4[12] = 0x50;
        l4[13] = 0x02;
    } else {
        l4[5] = 8;
    }
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    match src {
        IpAddr::V4(a) => {
            f.extend([
                0x08,
                0x00,
                0x45,
                0,
                0,
                20 + l4.len() as u8,
                0,
                0,
                0,
                0,
                64,
                proto,
                0,
                0,
            ]);
            f.extend(a.octets());
            f.extend([192, 0, 2, 1]);
        }
        IpAddr::V6(a) => {
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, l4.len() as u8, proto, 64]);
            f.extend(a.octets());
            f.extend(Ipv6Addr::LOCALHOST.octets());
        }
    }
    f.extend(l4);
    f
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((text, runtime_allow)) = generate(&mut u) else {
        return;
    };
    let tick_ns = 4_000_000;
    let Ok(cfg) = config::parse(&text, Path::new("/etc/shield/fuzz.toml"), tick_ns) else {
        return;
    };
    let rt = Runtime {
        allow: &runtime_allow,
        tick_ns,
        ..Runtime::default()
    };
    let compiled = policy::compile(&cfg, &rt).expect("a valid config compiles");

    // Ids are stable: recompiling against the result changes nothing.
    let again = policy::compile(
        &cfg,
        &Runtime {
            previous: Some(&compiled),
            ..rt.clone()
        },
    )
    .unwrap();
    assert_eq!(again, compiled, "recompiling moved something\n{text}");

    let allow: Vec<Cidr> = cfg.allow.iter().chain(&runtime_allow).copied().collect();
    let tiers: Vec<(u16, &[Cidr])> = cfg
        .tiers
        .iter()
        .map(|t| {
            let id = compiled.tiers.iter().position(|n| *n == t.name).unwrap();
            (id as u16, &t.cidrs[..])
        })
        .collect();
    let acls: Vec<&[Cidr]> = cfg
        .ports
        .iter()
        .filter_map(|p| p.allow_from.as_deref())
        .collect();

    // No entry the config did not write.
    let written: BTreeSet<Cidr> = allow
        .iter()
        .chain(tiers.iter().flat_map(|(_, c)| c.iter()))
        .chain(acls.iter().flat_map(|c| c.iter()))
        .copied()
        .collect();
    for c in compiled.sources.keys() {
        assert!(
            written.contains(c),
            "{c} is in the trie but not in the config\n{text}"
        );
    }

    // Ports: exactly the rules' ports, each with its rule's class and ACL.
    let mut acl_id = 0;
    let mut ports = BTreeSet::new();
    for rule in &cfg.ports {
        let class = compiled
            .classes
            .iter()
            .position(|n| *n == rule.name)
            .unwrap() as u16;
        let acl = if rule.allow_from.is_some() {
            acl_id += 1;
            acl_id
        } else {
            0
        };
        let proto = match rule.proto {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        };
        for &p in &rule.ports {
            let got = compiled.ports.get(&(proto, p)).copied().unwrap_or_default();
            assert_eq!(
                (got.class, got.acl),
                (class, acl),
                "{} port {p}\n{text}",
                rule.name
            );
            ports.insert((proto, p));
        }
    }
    assert_eq!(
        compiled.ports.keys().copied().collect::<BTreeSet<_>>(),
        ports
    );

    // The compiled maps in the model, behind a wall: everything banned and
    // listed by a feed, every rule's port closed by an empty ACL.
    let mut model = ModelPolicy {
        flags: compiled.global.flags,
        ipv6_prefix: compiled.global.ipv6_prefix as u8,
        sources: compiled.sources.iter().map(|(c, v)| (net(c), *v)).collect(),
        ports: compiled.ports.clone(),
        limits: compiled.limits.clone(),
        ..ModelPolicy::default()
    };
    for c in ["0.0.0.0/0", "::/0"] {
        let n = net(&c.parse().unwrap());
        model.bans.insert(n, BAN_FOREVER);
        model.feeds.insert(n, 1);
    }
    for rule in model.ports.values_mut() {
        rule.acl = 64;
    }
    let mut m = Model::new(model, 1_000_000_000);

    // Probes: both ends of every prefix the config wrote, and some more.
    let mut probes: Vec<IpAddr> = written.iter().flat_map(ends).collect();
    while let Ok(c) = cidr(&mut u) {
        if probes.len() > 64 {
            break;
        }
        probes.extend(ends(&c));
    }
    for addr in probes {
        let host = Cidr::host(addr);
        let allowed = allow.iter().any(|a| a.contains(&host));
        let tier = tiers
            .iter()
            .flat_map(|(id, cs)| cs.iter().map(move |c| (c, *id)))
            .filter(|(c, _)| c.contains(&host))
            .max_by_key(|(c, _)| c.prefix_len())
            .map_or(0, |(_, id)| id);
        let acl_mask = acls
            .iter()
            .enumerate()
            .filter(|(_, cs)| cs.iter().any(|c| c.contains(&host)))
            .fold(0u64, |mask, (i, _)| mask | 1 << i);
        let want = SourceClass {
            acl_mask,
            tier,
            flags: if allowed { SRC_ALLOWED } else { 0 },
            _pad: 0,
        };
        let got = compiled
            .sources
            .iter()
            .filter(|(c, _)| c.contains(&host))
            .max_by_key(|(c, _)| c.prefix_len())
            .map_or_else(SourceClass::default, |(_, v)| *v);
        assert_eq!(got, want, "the trie's answer for {addr}\n{text}");

        // Through the pipeline, to every rule's ports and one no rule has,
        // more often than any burst in a 64-bit fuzz input allows.
        let targets = compiled
            .ports
            .keys()
            .copied()
            .chain([(PROTO_TCP, 1), (PROTO_UDP, 1)]);
        for (proto, port) in targets {
            let f = frame(addr, proto, port);
            for _ in 0..3 {
                let (v, r) = m.judge(&f);
                if allowed {
                    assert_eq!(
                        (v, r),
                        (Verdict::Pass, Reason::Allowed),
                        "{addr} {proto}/{port}\n{text}"
                    );
                } else {
                    assert_eq!(
                        r,
                        Reason::Banned,
                        "{addr} {proto}/{port} got through\n{text}"
                    );
                }
            }
        }
    }
});
