//! `limpet-demo-backend ID=ADDR…`: runs one demo backend per argument, e.g.
//! `limpet-demo-backend web-1=127.0.0.1:8081`. `make run` starts one process per
//! backend, so that one can be stopped on its own.

use std::process::ExitCode;

const USAGE: &str = "usage: limpet-demo-backend ID=ADDR [ID=ADDR...]

Runs a demo HTTP backend named ID on each ADDR (IP:PORT) until Ctrl-C or SIGTERM.
Every response says which backend answered (body `backend ID`, header X-Backend-Id).
  GET /login, /logout      set and delete the application's session cookie APPSESSION
  GET /slow?ms=N           answer after N milliseconds
  GET /status/NNN          answer with status NNN
  GET /headers             the request headers received
  WebSocket on any path    echo each message prefixed with ID:

  limpet-demo-backend web-1=127.0.0.1:8081
";

#[tokio::main]
async fn main() -> ExitCode {
    let mut running = Vec::new();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.is_empty() {
        eprint!("{USAGE}");
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
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot wait for SIGTERM: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    ExitCode::SUCCESS
}
