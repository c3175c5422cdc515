//! `tls-proxy ADDRESS CERT KEY BACKEND...`: a TLS listener (ALPN h2 and http/1.1) on one
//! worker thread, round robin over plain HTTP/1.1 backends, nothing else. Built with
//! `--features openssl` or `--features rustls`; which one it is, it says on stderr.
//! With `-` for CERT and KEY the listener is plain HTTP: Pingora's own proxy path with no
//! logic, the floor limpet's CPU per request is compared with
//! (`FLOOR=1 scripts/bench-compare.sh`).

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct RoundRobin {
    backends: Vec<String>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for RoundRobin {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        Ok(Box::new(HttpPeer::new(
            self.backends[i].as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: tls-proxy ADDRESS CERT KEY BACKEND...");
        std::process::exit(2);
    }
    let library = if cfg!(feature = "openssl") {
        "openssl"
    } else {
        "rustls"
    };
    eprintln!("tls-proxy: {library} on {}", args[0]);
    let conf = ServerConf {
        threads: 1,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        RoundRobin {
            backends: args[3..].to_vec(),
            next: AtomicUsize::new(0),
        },
    );
    if args[1] == "-" {
        proxy.add_tcp(&args[0]);
    } else {
        let mut tls = TlsSettings::intermediate(&args[1], &args[2]).expect("certificate and key");
        tls.enable_h2();
        proxy.add_tls_with_settings(&args[0], None, tls);
    }
    server.add_service(proxy);
    server.run_forever();
}
