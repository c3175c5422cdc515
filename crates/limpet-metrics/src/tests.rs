//! Series appear, count and disappear as snapshots ask.
#![allow(clippy::unwrap_used)]

use super::*;
use limpet_config::BackendId;

fn key<'a>(pool: &'a PoolId, backend: &'a BackendId) -> BackendKey<'a> {
    BackendKey { pool, backend }
}

fn text(m: &Metrics) -> String {
    String::from_utf8(m.render()).unwrap()
}

#[test]
fn backend_series_appear_and_disappear() {
    let m = Metrics::new().unwrap();
    let (web, web1) = (PoolId::new("web"), BackendId::new("web-1"));
    let b = m.backend(key(&web, &web1), BackendState::Draining, 3);
    b.count_status(204);
    b.count_status(503);
    b.in_flight.inc();
    let t = text(&m);
    assert!(
        t.contains(r#"limpet_backend_requests_total{backend="web-1",code="2xx",pool="web"} 1"#),
        "{t}"
    );
    assert!(t.contains(r#"limpet_backend_requests_total{backend="web-1",code="5xx",pool="web"} 1"#));
    assert!(t.contains(r#"limpet_backend_state{backend="web-1",pool="web",state="draining"} 1"#));
    assert!(t.contains(r#"limpet_backend_state{backend="web-1",pool="web",state="active"} 0"#));
    assert!(t.contains(r#"limpet_backend_weight{backend="web-1",pool="web"} 3"#));
    m.remove_backend(key(&web, &web1));
    assert!(!text(&m).contains("web-1"));
}

/// The HELP of `limpet_backend_sessions` says what the number is: table entries
/// plus the estimate of cookie sessions.
#[test]
fn backend_sessions_help_names_both_sources() {
    let m = Metrics::new().unwrap();
    m.set_backend_sessions(key(&PoolId::new("web"), &BackendId::new("web-1")), 3);
    let t = text(&m);
    let help = t
        .lines()
        .find(|l| l.starts_with("# HELP limpet_backend_sessions "))
        .unwrap();
    assert!(help.contains("table") && help.contains("cookie"), "{help}");
}

#[test]
fn decisions_by_method_and_outcome() {
    let m = Metrics::new().unwrap();
    let d = m.decisions(&PoolId::new("web"), &["cookie"], &["hit", "new"]);
    d.count(0, 1);
    d.count(0, 1);
    d.count(3, 9); // out of range: ignored, never a panic
    assert!(text(&m)
        .contains(r#"limpet_persistence_decisions_total{method="cookie",outcome="new",pool="web"} 2"#));
}
