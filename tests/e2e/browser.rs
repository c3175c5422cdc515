//! A real browser: headless Chromium over HTTPS (HTTP/2), trusting the test
//! certificate by its public key, keeps its user on one backend across page loads and
//! browser restarts, while other clients' new sessions go elsewhere.

use std::process::Command;

use limpet_e2e::*;

/// Loads `url` in headless Chromium with `profile` (cookies persist there) and returns
/// the page's text.
fn chromium(profile: &std::path::Path, spki: &str, port: u16) -> String {
    // Bounded: a browser that hangs fails the test instead of holding it.
    let out = Command::new("timeout")
        .args(["60", "chromium"])
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--host-resolver-rules=MAP shop.test 127.0.0.1")
        .arg(format!("--ignore-certificate-errors-spki-list={spki}"))
        .arg("--dump-dom")
        .arg(format!("https://shop.test:{port}/"))
        .output()
        .expect("chromium (Debian package chromium; .ci/run installs it)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_over_https_and_http2_stays_on_one_backend() {
    let dir = scratch();
    let (cert, key) = self_signed(&dir, "shop", &["shop.test"], Key::EcdsaP256, "limpet");
    // The browser trusts this one certificate by the hash of its public key.
    let spki = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()
        .unwrap();
    let spki = String::from_utf8_lossy(&spki.stdout).trim().to_string();

    let bs = backends("br", 3).await;
    let (addr, admin) = (free_addr(), free_addr());
    let yaml = format!(
        r#"listeners:
  - address: "{addr}"
    tls: {{ cert: "{}", key: "{}" }}
admin:
  address: "{admin}"
cookie_keys:
  - {{ id: k1, secret_env: LIMPET_TEST_KEY }}
routes:
  - {{ host: "*", path_prefix: /, pool: web }}
pools:
  web:
    persistence:
      - cookie: {{ name: LIMPET, ttl: 15m }}
    backends:
{}"#,
        cert.display(),
        key.display(),
        backend_list(&bs)
    );
    let lb = Limpet::start_with(&yaml, addr, admin).await;
    let profile = dir.join("profile");
    // The demo page says "backend <id>" inside Chromium's <pre>.
    let backend_of = |page: &str| {
        page.split_once("backend ")
            .map(|(_, rest)| {
                rest.split(|c: char| c.is_whitespace() || c == '<')
                    .next()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
            .to_string()
    };
    let first = backend_of(&chromium(&profile, &spki, addr.port()));
    assert!(first.starts_with("br-"), "no page: {}", lb.log_text());
    for load in 0..3 {
        // Someone else starts a session in between: round robin moves on, the
        // browser does not.
        let other = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "--resolve"])
            .arg(format!("shop.test:{}:127.0.0.1", addr.port()))
            .arg(format!("https://shop.test:{}/", addr.port()))
            .status()
            .unwrap();
        assert!(other.success());
        let again = backend_of(&chromium(&profile, &spki, addr.port()));
        assert_eq!(again, first, "load {load} of the page moved the user");
    }
    let listener = addr.to_string();
    let h2 = lb
        .metric(&format!(
            r#"limpet_requests_total{{listener="{listener}",protocol="h2",tls="true"}}"#
        ))
        .await;
    assert!(h2 >= 4.0, "the browser spoke HTTP/2 {h2} times");
    assert!(lb.web_cookie_decisions("hit").await >= 3.0);
}
