//! Crafted frames onto a lab interface through an AF_PACKET socket: what a
//! test needs to play thousands of distinct (spoofed) sources at once.

use std::{ffi::CString, thread, time::Duration};

use crate::lab::Lab;

/// Sends every frame out of `iface` in namespace `ns`, pausing briefly every
/// `batch` frames so the veth's receive ring (which XDP drains) is not
/// simply overrun. Returns how many frames the kernel accepted.
pub fn send_frames(ns: &str, iface: &str, frames: Vec<Vec<u8>>, batch: usize) -> usize {
    let (ns, iface) = (ns.to_string(), iface.to_string());
    thread::spawn(move || {
        Lab::enter(&ns);
        let name = CString::new(iface.clone()).unwrap();
        // SAFETY: NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex != 0, "no interface {iface} in {ns}");
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        // SAFETY: zeroed sockaddr_ll is a valid value; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let mut sent = 0;
        for (i, f) in frames.iter().enumerate() {
            // SAFETY: the buffer and address outlive the call.
            let n = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n == f.len() as isize {
                sent += 1;
            }
            if batch > 0 && i % batch == batch - 1 {
                thread::sleep(Duration::from_micros(200));
            }
        }
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
        sent
    })
    .join()
    .unwrap()
}
