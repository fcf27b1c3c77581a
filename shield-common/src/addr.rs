//! Prefix masking. Addresses are byte arrays in network order, exactly as they
//! sit in the packet, so the kernel never converts byte order.

/// A netmask of `prefix` leading one bits over 16 bytes (`prefix` is clamped
/// to 128).
#[inline(always)]
pub const fn v6_mask(prefix: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let bits = prefix as i64 - (i as i64) * 8;
        m[i] = if bits >= 8 {
            0xff
        } else if bits <= 0 {
            0
        } else {
            !(0xffu8 >> bits)
        };
        i += 1;
    }
    m
}

/// A netmask of `prefix` leading one bits over 4 bytes.
#[inline(always)]
pub const fn v4_mask(prefix: u32) -> [u8; 4] {
    let m = v6_mask(prefix);
    [m[0], m[1], m[2], m[3]]
}

/// `addr & mask`, byte by byte.
#[inline(always)]
pub const fn apply_mask<const N: usize>(addr: [u8; N], mask: &[u8; N]) -> [u8; N] {
    let mut out = addr;
    let mut i = 0;
    while i < N {
        out[i] &= mask[i];
        i += 1;
    }
    out
}

/// True when `addr` has no bits set past `prefix` (it is a network address).
pub const fn is_network<const N: usize>(addr: [u8; N], prefix: u32) -> bool {
    let mask = v6_mask(prefix);
    let mut i = 0;
    while i < N {
        if addr[i] & !mask[i] != 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// The IPv4-mapped IPv6 form (`::ffff:a.b.c.d`), used where one key type
/// holds both families.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(v4_mask(0), [0, 0, 0, 0]);
        assert_eq!(v4_mask(8), [255, 0, 0, 0]);
        assert_eq!(v4_mask(20), [255, 255, 240, 0]);
        assert_eq!(v4_mask(32), [255; 4]);
        assert_eq!(v4_mask(99), [255; 4]);
        let m = v6_mask(64);
        assert_eq!(&m[..8], &[255; 8]);
        assert_eq!(&m[8..], &[0; 8]);
        assert_eq!(v6_mask(57)[7], 0x80);
        assert_eq!(v6_mask(128), [255; 16]);
    }

    #[test]
    fn masking_and_network_check() {
        assert_eq!(apply_mask([10, 1, 2, 3], &v4_mask(16)), [10, 1, 0, 0]);
        assert!(is_network([10, 1, 0, 0], 16));
        assert!(!is_network([10, 1, 0, 1], 16));
        assert!(is_network([10, 1, 0, 1], 32));
        assert!(is_network([0u8; 16], 0));
        let mut a = [0u8; 16];
        a[0] = 0x20;
        a[1] = 0x01;
        a[9] = 1;
        assert!(!is_network(a, 64));
        assert!(is_network(apply_mask(a, &v6_mask(64)), 64));
    }

    #[test]
    fn every_prefix_length_has_that_many_bits() {
        for p in 0..=128u32 {
            let ones: u32 = v6_mask(p).iter().map(|b| b.count_ones()).sum();
            assert_eq!(ones, p);
        }
    }

    #[test]
    fn mapped() {
        let m = v4_mapped([192, 0, 2, 1]);
        assert_eq!(&m[10..], &[0xff, 0xff, 192, 0, 2, 1]);
    }
}
