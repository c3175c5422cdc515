//! HTTP/2 clients under the same limits as HTTP/1: a connection that never starts (or
//! stops using) HTTP/2 closes after `client_idle_timeout`, over TLS (ALPN h2) and h2c;
//! the SETTINGS limpet sends carry `server.max_request_header_bytes` and
//! `server.h2_max_concurrent_streams`, and a header block above the first is refused.
//! Frames are written by hand so that the client does exactly what the test says.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use limpet_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK string (no Huffman) with its 7-bit-prefix length.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 127 {
        out.push(s.len() as u8);
    } else {
        out.push(127);
        let mut n = s.len() - 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// A GET of `/` for `host` with the extra `headers` (literal, never indexed), as one
/// HEADERS frame on `stream` that ends the stream.
fn get(stream: u32, host: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    // :method GET, :scheme http, :path / from the static table; :authority by name index 1.
    let mut block = vec![0x82, 0x86, 0x84, 0x01];
    hpack_string(&mut block, host.as_bytes());
    for (name, value) in headers {
        block.push(0x00);
        hpack_string(&mut block, name.as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    frame(HEADERS, 0x4 | 0x1, stream, &block)
}

/// Reads one frame: (type, flags, stream, payload); `None` once the connection closed.
async fn read_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(15), s.read_exact(&mut head))
        .await
        .expect("no frame within 15 s")
        .ok()?;
    let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

/// How long until the server closes a TLS connection (ALPN h2) on which the client
/// sends `bytes` and then nothing (openssl s_client, its input held open).
fn tls_h2_closes_after(addr: SocketAddr, bytes: &[u8]) -> Duration {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "h2", "-connect", &addr.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let started = Instant::now();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, bytes).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    let deadline = started + Duration::from_secs(15);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("TLS connection still open after 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    drop(stdin);
    reader.join().unwrap();
    took
}

fn config(
    tls: SocketAddr,
    h2c: SocketAddr,
    admin: SocketAddr,
    cert: &(std::path::PathBuf, std::path::PathBuf),
    bs: &[Backend],
) -> String {
    format!(
        r#"server:
  client_idle_timeout: 1s
  request_header_timeout: 1s
  max_request_header_bytes: 8KiB
  h2_max_concurrent_streams: 32
listeners:
  - address: "{tls}"
    tls: {{ cert: "{}", key: "{}" }}
  - {{ address: "{h2c}", h2c: true }}
admin:
  address: "{admin}"
routes:
  - {{ host: "*", path_prefix: /, pool: web }}
pools:
  web:
    backends:
{}"#,
        cert.0.display(),
        cert.1.display(),
        backend_list(bs)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_close_when_idle_and_carry_the_header_limit() {
    let dir = scratch();
    let cert = self_signed(&dir, "h2", &["h2.test"], Key::EcdsaP256, "limpet");
    let bs = backends("h2", 1).await;
    let (tls, h2c, admin) = (free_addr(), free_addr(), free_addr());
    let lb = Limpet::start_with(&config(tls, h2c, admin, &cert, &bs), tls, admin).await;
    let within = |took: Duration, what: &str| {
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(6),
            "{what}: closed after {took:?}"
        );
    };

    // TLS listener: a client that never starts its handshake.
    let mut s = TcpStream::connect(tls).await.unwrap();
    within(until_closed(&mut s).await.1, "TLS, no handshake");

    // TLS, ALPN h2: silent after the handshake; the preface and SETTINGS, then silent.
    let t = tokio::task::spawn_blocking(move || tls_h2_closes_after(tls, b""))
        .await
        .unwrap();
    within(t, "TLS h2, nothing sent");
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(SETTINGS, 0, 0, &[]));
    let o = opening.clone();
    let t = tokio::task::spawn_blocking(move || tls_h2_closes_after(tls, &o))
        .await
        .unwrap();
    within(t, "TLS h2, preface then nothing");

    // h2c: nothing at all; the preface and SETTINGS, then silent.
    let mut s = TcpStream::connect(h2c).await.unwrap();
    within(until_closed(&mut s).await.1, "h2c, nothing sent");
    let mut s = TcpStream::connect(h2c).await.unwrap();
    s.write_all(&opening).await.unwrap();
    within(until_closed(&mut s).await.1, "h2c, preface then nothing");
    // Stalled in the middle of the preface: closed, with no HTTP/1 answer.
    let mut s = TcpStream::connect(h2c).await.unwrap();
    s.write_all(&PREFACE[..10]).await.unwrap();
    let (text, took) = until_closed(&mut s).await;
    within(took, "h2c, half a preface");
    assert!(
        text.is_empty(),
        "an HTTP/1 answer to half an h2 preface: {text:?}"
    );

    // h2c listener, HTTP/1: a request shorter than the h2c preface is answered at once
    // (not held while limpet waits for 24 bytes to tell HTTP/2 from HTTP/1).
    let mut s = TcpStream::connect(h2c).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut answer))
        .await
        .expect("a short HTTP/1 request on an h2c listener was not answered")
        .unwrap();
    assert!(
        answer.ends_with(b" 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // h2c: limpet's SETTINGS carry the limits; a request is served, a header block
    // above max_request_header_bytes is refused, and once idle the connection closes.
    let mut s = TcpStream::connect(h2c).await.unwrap();
    s.write_all(&opening).await.unwrap();
    let (kind, _, _, payload) = read_frame(&mut s).await.expect("SETTINGS");
    assert_eq!(kind, SETTINGS);
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert!(
        settings.contains(&(0x3, 32)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 8192)),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );
    s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
    s.write_all(&get(1, "h2.test", &[])).await.unwrap();
    let big = "x".repeat(10_000);
    s.write_all(&get(3, "h2.test", &[("x-big", &big)])).await.unwrap();
    let mut status = std::collections::HashMap::new();
    while status.len() < 2 {
        let Some((kind, _, stream, payload)) = read_frame(&mut s).await else {
            panic!("closed early: {status:?}\n{}", lb.log_text())
        };
        match kind {
            // A status from the static table (0x88 = 200, 0x8d = 204...) or a literal.
            HEADERS if stream > 0 => {
                status.insert(stream, status_of(&payload));
            }
            // RST_STREAM: the stream was refused without a response.
            0x3 => {
                status.insert(stream, "reset".into());
            }
            GOAWAY => panic!("GOAWAY: {payload:?}"),
            _ => {}
        }
    }
    assert_eq!(status[&1], "200", "{status:?}");
    assert_eq!(status[&3], "431", "{status:?}");
    within(until_closed(&mut s).await.1, "h2c, idle after requests");
    assert_eq!(
        curl(&["--http2-prior-knowledge"], &format!("http://{h2c}/")).status,
        200,
        "the listener still serves\n{}",
        lb.log_text()
    );
}

/// The `:status` a response header block starts with (servers send it first): from
/// the static table, or a literal with `:status`'s name index and a plain or Huffman
/// coded value (digits only).
fn status_of(block: &[u8]) -> String {
    match block[0] {
        0x88 => return "200".into(),
        0x89 => return "204".into(),
        0x8c => return "400".into(),
        0x8d => return "404".into(),
        0x8e => return "500".into(),
        0x08 | 0x18 | 0x48 => {}
        b => return format!("first byte {b:#x}"),
    }
    let (huffman, len) = (block[1] & 0x80 != 0, (block[1] & 0x7f) as usize);
    let value = &block[2..2 + len];
    if !huffman {
        return String::from_utf8_lossy(value).into();
    }
    // HPACK's Huffman codes for '0'..='9': five bits for 0-2, six for 3-9.
    let codes: [(u32, u32); 10] = [
        (0b00000, 5),
        (0b00001, 5),
        (0b00010, 5),
        (0b011001, 6),
        (0b011010, 6),
        (0b011011, 6),
        (0b011100, 6),
        (0b011101, 6),
        (0b011110, 6),
        (0b011111, 6),
    ];
    let bits: Vec<u32> = value
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| u32::from(b >> i & 1)))
        .collect();
    let (mut out, mut at) = (String::new(), 0);
    'digits: while out.len() < 3 {
        for (digit, (code, n)) in codes.iter().enumerate() {
            let n = *n as usize;
            if at + n <= bits.len() && bits[at..at + n].iter().fold(0, |a, b| a << 1 | b) == *code {
                out.push(char::from(b'0' + digit as u8));
                at += n;
                continue 'digits;
            }
        }
        break;
    }
    out
}
