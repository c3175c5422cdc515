//! `limpet-demo-backend ID=ADDR…`: runs one demo backend per argument in one process,
//! e.g. `limpet-demo-backend web-1=127.0.0.1:8081 web-2=127.0.0.1:8082`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut running = Vec::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: limpet-demo-backend ID=ADDR [ID=ADDR…]");
        return ExitCode::from(2);
    }
    for arg in args {
        let Some((id, addr)) = arg.split_once('=') else {
            eprintln!("expected ID=ADDR, got `{arg}`");
            return ExitCode::from(2);
        };
        let Ok(addr) = addr.parse() else {
            eprintln!("`{addr}` is not IP:PORT");
            return ExitCode::from(2);
        };
        match limpet_demo::Backend::start(id, addr).await {
            Ok(b) => {
                eprintln!("demo backend {} listening on {}", b.id, b.addr);
                running.push(b);
            }
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
