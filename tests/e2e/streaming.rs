//! Bodies are streamed, not buffered; WebSocket upgrades pass through and are pinned.

use futures_util::{SinkExt, StreamExt};
use limpet_e2e::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const MB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_upload_and_download_stream_through() {
    let bs = backends("u", 2).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    let c = client();
    let chunk = bytes::Bytes::from(vec![b'z'; MB as usize]);
    let stream = futures_util::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = c
        .post(lb.url("/upload"))
        .header("content-length", (100 * MB).to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_some());
    assert_eq!(resp.text().await.unwrap().trim(), (100 * MB).to_string());

    let mut resp = c
        .get(lb.url(&format!("/download?bytes={}", 100 * MB)))
        .send()
        .await
        .unwrap();
    let mut total = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len() as u64;
    }
    assert_eq!(total, 100 * MB);
    // 100 MB went each way; had limpet buffered a body its peak RSS would show it.
    let peak = peak_rss_kib(lb.pid());
    eprintln!("limpet peak RSS after 200 MB streamed: {peak} KiB");
    assert!(
        peak < 60 * 1024,
        "limpet peak RSS {peak} KiB suggests a buffered body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_pinned_like_any_request() {
    let bs = backends("ws", 3).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    let c = client();
    // Pin through plain HTTP first.
    let pinned = get(&c, &lb.url("/"), &[], "LIMPET").await;
    let cookie = pinned.set_cookie.unwrap();
    for _ in 0..3 {
        let mut req = format!("ws://{}/chat", lb.addr).into_client_request().unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["x-backend-id"], pinned.backend.as_str());
        assert!(resp.headers().get("set-cookie").is_none());
        // The backend got a request id, as for any request (one limpet made: the
        // client is not a trusted proxy).
        let seen = resp
            .headers()
            .get("x-seen-request-id")
            .map(|v| v.to_str().unwrap().len());
        assert_eq!(seen, Some(32), "{:?}", resp.headers());
        ws.send(Message::text("hello")).await.unwrap();
        let echo = match ws.next().await {
            Some(Ok(m)) => m,
            other => panic!("no echo: {other:?}\nlog:\n{}", lb.log_text()),
        };
        assert_eq!(
            echo.into_text().unwrap().as_str(),
            format!("{}:hello", pinned.backend)
        );
        ws.close(None).await.unwrap();
    }
    // A WebSocket without a session starts one.
    let (_ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/chat", lb.addr))
        .await
        .unwrap();
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("LIMPET="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_to_a_dead_pinned_backend_is_repinned() {
    let mut bs = backends("wf", 2).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "    retries: 1\n").await;
    let c = client();
    let pinned = get(&c, &lb.url("/"), &[], "LIMPET").await;
    let cookie = pinned.set_cookie.unwrap();
    let dead = bs.iter().position(|b| b.id == pinned.backend).unwrap();
    bs.remove(dead).kill().await;
    let mut req = format!("ws://{}/chat", lb.addr).into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let survivor = bs[0].id.clone();
    assert_eq!(resp.headers()["x-backend-id"], survivor.as_str());
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("LIMPET="),
        "re-pinned upgrade carries the new cookie: {set}"
    );
    // The tunnel works in both directions after a pause shorter than the idle limit.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    ws.send(Message::text("after-pause")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(
        echo.into_text().unwrap().as_str(),
        format!("{survivor}:after-pause")
    );
    ws.close(None).await.unwrap();
    // The request is accounted for when its tunnel ends.
    for _ in 0..50 {
        if lb.web_cookie_decisions("repinned").await == 1.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "repinned never counted: {}",
        lb.web_cookie_decisions("repinned").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrade_is_an_ordinary_response() {
    let bs = backends("wr", 1).await;
    let lb = Limpet::start(&bs, "name: LIMPET, ttl: 15m", "").await;
    // No Sec-WebSocket-Key: the demo backend answers 400 with a body.
    let resp = client()
        .get(lb.url("/chat"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("LIMPET="));
    assert_eq!(resp.text().await.unwrap(), "missing sec-websocket-key\n");
    // The connection is still usable for ordinary requests afterwards.
    let r = get(&client(), &lb.url("/"), &[], "LIMPET").await;
    assert_eq!(r.status, 200);
}
