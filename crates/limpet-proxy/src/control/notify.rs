//! Readiness for service managers (systemd's `Type=notify`, sd_notify(3)): `READY=1`
//! once every listener and the admin listener accept connections, and
//! `RELOADING=1` … `READY=1` around each reload. The protocol is one datagram per
//! message to the Unix socket named by `NOTIFY_SOCKET`; without it nothing is sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Sends `message` to the service manager, if limpet runs under one.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's own, in some setups).
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(message.as_bytes(), &addr))
    } else {
        sock.send_to(message.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// `RELOADING=1` with the monotonic time systemd asks for.
pub fn reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts)
    };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Waits (on the calling thread, up to `deadline`) until each of `addresses` is a
/// listening TCP socket, then says `READY=1` and logs it. Reads /proc/net/tcp and
/// tcp6, so that no connection is made to a listener (a TLS one would log it as a
/// failed handshake).
pub fn when_listening(addresses: Vec<SocketAddr>, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let tables = [
            std::fs::read_to_string("/proc/net/tcp").unwrap_or_default(),
            std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default(),
        ];
        if addresses.iter().all(|a| tables.iter().any(|t| listening(t, *a))) {
            tracing::info!("ready: every listener accepts connections");
            notify("READY=1\nSTATUS=serving");
            return;
        }
        if Instant::now() > until {
            tracing::warn!(
                ?addresses,
                "listeners not up after {deadline:?}; not telling the service manager ready"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `table` (the text of /proc/net/tcp or tcp6) has `addr` in state LISTEN.
fn listening(table: &str, addr: SocketAddr) -> bool {
    let want = proc_local_address(addr);
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        local == Some(want.as_str()) && state == Some("0A")
    })
}

/// `addr` as /proc/net/tcp{,6} write it: the address's 32-bit words in host (little-
/// endian on the machines limpet runs on) byte order, in hex, then the port.
fn proc_local_address(addr: SocketAddr) -> String {
    let hex_words = |octets: &[u8]| {
        octets
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect::<String>()
    };
    let ip = match addr {
        SocketAddr::V4(a) => hex_words(&a.ip().octets()),
        SocketAddr::V6(a) => hex_words(&a.ip().octets()),
    };
    format!("{ip}:{:04X}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_spelled_as_the_kernel_lists_them() {
        // Lines as /proc/net/tcp and tcp6 print them on x86-64.
        assert_eq!(
            proc_local_address("127.0.0.1:8080".parse().unwrap()),
            "0100007F:1F90"
        );
        assert_eq!(
            proc_local_address("0.0.0.0:443".parse().unwrap()),
            "00000000:01BB"
        );
        assert_eq!(
            proc_local_address("[::1]:9090".parse().unwrap()),
            "00000000000000000000000001000000:2382"
        );
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:2382 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n";
        assert!(listening(table, "127.0.0.1:8080".parse().unwrap()));
        // Established, not listening.
        assert!(!listening(table, "127.0.0.1:9090".parse().unwrap()));
    }
}
