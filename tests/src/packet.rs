//! Builds Ethernet frames byte by byte, so tests can craft exactly the
//! headers (and the damage) they need.

use std::net::IpAddr;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        dport: u16,
        flags: u8,
    },
    Udp {
        dport: u16,
    },
    Icmp,
    /// Any other protocol number, with this payload.
    Raw {
        proto: u8,
        payload: Vec<u8>,
    },
}

/// An IPv6 extension header to put before the L4 header.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Fragment header with this offset (in 8-byte units) and more-fragments flag.
    Fragment {
        offset: u16,
        more: bool,
    },
}

/// A packet description; `build()` turns it into a frame.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// 802.1Q / 802.1ad tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// IPv4 fragment offset in 8-byte units (0: first or unfragmented).
    pub v4_frag_offset: u16,
    pub v4_more_fragments: bool,
    pub ext: Vec<Ext>,
    pub payload: usize,
}

impl Pkt {
    pub fn new(src: &str, l4: L4) -> Pkt {
        let src: IpAddr = src.parse().unwrap();
        let dst = if src.is_ipv4() {
            "192.0.2.100"
        } else {
            "2001:db8:ffff::100"
        };
        Pkt {
            src,
            dst: dst.parse().unwrap(),
            l4,
            vlans: Vec::new(),
            v4_frag_offset: 0,
            v4_more_fragments: false,
            ext: Vec::new(),
            payload: 0,
        }
    }

    pub fn tcp(src: &str, dport: u16, flags: u8) -> Pkt {
        Pkt::new(src, L4::Tcp { dport, flags })
    }

    pub fn syn(src: &str, dport: u16) -> Pkt {
        Pkt::tcp(src, dport, TCP_SYN)
    }

    pub fn udp(src: &str, dport: u16) -> Pkt {
        Pkt::new(src, L4::Udp { dport })
    }

    pub fn icmp(src: &str) -> Pkt {
        Pkt::new(src, L4::Icmp)
    }

    pub fn vlan(mut self, tpid: u16, id: u16) -> Pkt {
        self.vlans.push((tpid, id));
        self
    }

    pub fn ext(mut self, e: Ext) -> Pkt {
        self.ext.push(e);
        self
    }

    pub fn v4_fragment(mut self, offset: u16, more: bool) -> Pkt {
        self.v4_frag_offset = offset;
        self.v4_more_fragments = more;
        self
    }

    pub fn payload(mut self, n: usize) -> Pkt {
        self.payload = n;
        self
    }

    fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp => {
                if self.src.is_ipv4() {
                    1
                } else {
                    58
                }
            }
            L4::Raw { proto, .. } => *proto,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = match &self.l4 {
            L4::Tcp { dport, flags } => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&40000u16.to_be_bytes());
                t[2..4].copy_from_slice(&dport.to_be_bytes());
                t[12] = 5 << 4;
                t[13] = *flags;
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                t
            }
            L4::Udp { dport } => {
                let mut u = vec![0u8; 8];
                u[0..2].copy_from_slice(&40000u16.to_be_bytes());
                u[2..4].copy_from_slice(&dport.to_be_bytes());
                u[4..6].copy_from_slice(&((8 + self.payload) as u16).to_be_bytes());
                u
            }
            L4::Icmp => vec![8, 0, 0, 0, 0, 1, 0, 1],
            L4::Raw { payload, .. } => payload.clone(),
        };
        b.extend(std::iter::repeat_n(0xab, self.payload));
        b
    }

    /// The finished Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for (tpid, id) in &self.vlans {
            f.extend(tpid.to_be_bytes());
            f.extend(id.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend(0x0800u16.to_be_bytes());
                let l4 = self.l4_bytes();
                let total = 20 + l4.len();
                let mut ip = vec![0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                let frag = self.v4_frag_offset | if self.v4_more_fragments { 0x2000 } else { 0 };
                ip[6..8].copy_from_slice(&frag.to_be_bytes());
                ip[8] = 64;
                ip[9] = self.proto();
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                f.extend(ip);
                f.extend(l4);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend(0x86ddu16.to_be_bytes());
                let mut rest = Vec::new();
                let mut nexts: Vec<u8> = self
                    .ext
                    .iter()
                    .map(|e| match e {
                        Ext::HopByHop => 0,
                        Ext::Routing => 43,
                        Ext::Fragment { .. } => 44,
                        Ext::DestOpts => 60,
                    })
                    .collect();
                nexts.push(self.proto());
                for (i, e) in self.ext.iter().enumerate() {
                    let next = nexts[i + 1];
                    match e {
                        Ext::Fragment { offset, more } => {
                            let v = (offset << 3) | u16::from(*more);
                            rest.extend([next, 0]);
                            rest.extend(v.to_be_bytes());
                            rest.extend([0, 0, 0, 1]);
                        }
                        _ => rest.extend([next, 0, 1, 4, 0, 0, 0, 0]),
                    }
                }
                rest.extend(self.l4_bytes());
                let mut ip = vec![0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
                ip[6] = nexts[0];
                ip[7] = 64;
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                f.extend(ip);
                f.extend(rest);
            }
            _ => panic!("src and dst families differ"),
        }
        f
    }
}

/// An ARP request frame.
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 2]);
    f.extend(0x0806u16.to_be_bytes());
    f.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend([
        0x02, 0, 0, 0, 0, 2, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192, 0, 2, 2,
    ]);
    f
}
