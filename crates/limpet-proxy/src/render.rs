//! Numbers and addresses written without `core::fmt` on the request path: its
//! machinery costs several hundred instructions a call (measured with
//! scripts/bench-instructions.sh), more than the rest of a header or log field.

use std::net::IpAddr;

/// Somewhere ASCII text can be appended.
pub trait Out {
    fn put(&mut self, s: &str);
}

impl Out for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

/// `n` in decimal.
pub fn uint(out: &mut impl Out, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// `ip` as `Display` writes it; IPv4 (nearly every client) without `fmt`.
pub fn ip(out: &mut impl Out, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.put(".");
                }
                uint(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let mut buf = [0u8; 64];
            let mut rest = &mut buf[..];
            let room = rest.len();
            let _ = std::io::Write::write_fmt(&mut rest, format_args!("{v6}"));
            let len = room - rest.len();
            out.put(std::str::from_utf8(&buf[..len]).unwrap_or_default());
        }
    }
}

/// `addr` as `Display` writes a socket address: `1.2.3.4:80`, `[::1]:80`.
pub fn socket_addr(out: &mut impl Out, addr: std::net::SocketAddr) {
    if addr.is_ipv6() {
        out.put("[");
        ip(out, addr.ip());
        out.put("]");
    } else {
        ip(out, addr.ip());
    }
    out.put(":");
    uint(out, u64::from(addr.port()));
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn everything_renders_as_display_writes_it(n in any::<u64>(), v4 in any::<u32>(), v6 in any::<u128>(), port in any::<u16>()) {
            let mut s = String::new();
            uint(&mut s, n);
            prop_assert_eq!(&s, &n.to_string());
            for addr in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                let mut s = String::new();
                ip(&mut s, addr);
                prop_assert_eq!(&s, &addr.to_string());
                let sa = SocketAddr::new(addr, port);
                let mut s = String::new();
                socket_addr(&mut s, sa);
                prop_assert_eq!(&s, &sa.to_string());
            }
        }
    }
}
