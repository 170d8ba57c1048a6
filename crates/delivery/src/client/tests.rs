//! Attempts over real HTTP against a small receiver on 127.0.0.1, plus the pure parts of the
//! client (address filtering, error names, `Retry-After`).
//!
//! Traffic goes to loopback only. Names are resolved by a fixed test lookup, never by DNS, and
//! the refusal tests assert that the receiver saw no connection at all.

use super::*;
use crate::policy::{Outcome, decide};
use crate::signing;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver on an ephemeral loopback port whose answer depends on the path. It counts
/// connections (not just requests), so refusal tests can prove nothing was even dialled.
struct Receiver {
    port: u16,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, s) = (connections.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, port, s.clone()));
            }
        });
        Receiver {
            port,
            connections,
            seen,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// Reads one request and answers it according to its path, then closes the connection.
async fn serve(mut stream: TcpStream, port: u16, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + length].to_vec();
    seen.lock().expect("lock").push(Seen {
        path: path.clone(),
        headers,
        body,
    });
    let (status, extra, body) = match path.as_str() {
        "/ok" => ("200 OK", String::new(), "ok".to_owned()),
        "/busy" => (
            "503 Service Unavailable",
            "retry-after: 120\r\n".to_owned(),
            "busy".to_owned(),
        ),
        "/broken" => (
            "500 Internal Server Error",
            "retry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n".to_owned(),
            "broken".to_owned(),
        ),
        "/moved" => (
            "301 Moved Permanently",
            format!("location: http://127.0.0.1:{port}/ok\r\n"),
            String::new(),
        ),
        "/big" => ("200 OK", String::new(), "é".repeat(2500)),
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        _ => ("404 Not Found", String::new(), String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

fn client(allow_private: bool) -> DeliveryClient {
    client_with(allow_private, Lookup::System)
}

fn client_with(allow_private: bool, lookup: Lookup) -> DeliveryClient {
    let config = ClientConfig {
        timeout: Duration::from_secs(3),
        allow_private,
        max_idle_per_host: 16,
    };
    DeliveryClient::with_lookup(&config, lookup).expect("client")
}

const BODY: &[u8] = br#"{"event":"qss.meeting_qos_summary","payload":{"mos":4.25}}"#;

async fn post(client: &DeliveryClient, url: &str, timeout: Duration) -> AttemptResult {
    let headers = signing::headers("test", "dlv_1", 1_700_000_000, BODY, SECRET, None);
    attempt(client, url, &headers, Bytes::from_static(BODY), timeout).await
}

#[tokio::test]
async fn a_2xx_answer_is_a_success_and_the_receiver_gets_the_signed_body() {
    let receiver = Receiver::start().await;

    let result = post(&client(true), &receiver.url("/ok"), Duration::from_secs(3)).await;

    assert_eq!(result.http_status, Some(200));
    assert_eq!(result.error, None);
    assert_eq!(result.response_body, "ok");
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.body, BODY);
    assert_eq!(
        request.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(request.header("user-agent"), Some("qss/test"));
    assert_eq!(request.header("webhook-id"), Some("dlv_1"));
    let ts: i64 = request
        .header("x-zm-request-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("timestamp");
    assert_eq!(
        request.header("x-zm-signature"),
        Some(signing::zoom_signature(SECRET, ts, &request.body).as_str())
    );
    assert_eq!(
        request.header("webhook-signature"),
        Some(signing::standard_signature(SECRET, "dlv_1", ts, &request.body).as_str())
    );
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_at_the_time_the_endpoint_asked_for() {
    let receiver = Receiver::start().await;

    let result = post(
        &client(true),
        &receiver.url("/busy"),
        Duration::from_secs(3),
    )
    .await;

    assert_eq!(result.http_status, Some(503));
    assert_eq!(result.error, Some(AttemptError::HttpStatus));
    assert_eq!(result.response_body, "busy");
    assert_eq!(
        result.retry_after,
        Some(RetryAfter::Delay(Duration::from_secs(120)))
    );
    let now = 1_700_000_000_000;
    assert_eq!(
        decide(&result, 1, &[300, 1200, 3600], now, now, None, 0.5),
        Outcome::Retry {
            at_ms: now + 120_000
        }
    );
}

#[tokio::test]
async fn a_500_with_retry_after_keeps_the_hint_but_the_policy_uses_the_schedule() {
    let receiver = Receiver::start().await;

    let result = post(
        &client(true),
        &receiver.url("/broken"),
        Duration::from_secs(3),
    )
    .await;

    assert_eq!(result.http_status, Some(500));
    assert!(matches!(result.retry_after, Some(RetryAfter::At(_))));
    let now = 1_700_000_000_000;
    assert_eq!(
        decide(&result, 1, &[300], now, now, None, 0.0),
        Outcome::Retry {
            at_ms: now + 300_000
        }
    );
}

#[tokio::test]
async fn a_redirect_is_reported_and_never_followed() {
    let receiver = Receiver::start().await;

    let result = post(
        &client(true),
        &receiver.url("/moved"),
        Duration::from_secs(3),
    )
    .await;

    assert_eq!(result.http_status, Some(301));
    assert_eq!(result.error, Some(AttemptError::HttpStatus));
    let paths: Vec<String> = receiver.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/moved"]);
}

#[tokio::test]
async fn a_hanging_endpoint_is_cut_off_at_the_timeout() {
    let receiver = Receiver::start().await;

    let result = post(
        &client(true),
        &receiver.url("/hang"),
        Duration::from_millis(300),
    )
    .await;

    assert_eq!(result.error, Some(AttemptError::Timeout));
    assert_eq!(result.http_status, None);
    assert!(
        (250..2000).contains(&result.duration_ms),
        "took {} ms",
        result.duration_ms
    );
}

#[tokio::test]
async fn a_long_response_body_is_truncated_to_its_first_2048_bytes() {
    let receiver = Receiver::start().await;

    let result = post(&client(true), &receiver.url("/big"), Duration::from_secs(3)).await;

    assert_eq!(result.http_status, Some(200));
    // 1024 two-byte characters fill 2048 bytes exactly; nothing of the remaining 2952 is kept.
    assert_eq!(result.response_body, "é".repeat(1024));
}

#[tokio::test]
async fn a_loopback_url_is_refused_without_any_connection_when_private_networks_are_not_allowed() {
    let receiver = Receiver::start().await;
    let strict = client(false);

    let https = format!("https://127.0.0.1:{}/ok", receiver.port);
    let mapped = format!("https://[::ffff:127.0.0.1]:{}/ok", receiver.port);
    for url in [receiver.url("/ok"), https, mapped] {
        let result = post(&strict, &url, Duration::from_secs(3)).await;
        assert_eq!(result.error, Some(AttemptError::RefusedAddress), "{url}");
        assert_eq!(result.http_status, None);
    }

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_at_connection_time() {
    // DNS rebinding: the name passes the URL check, and only the resolver sees the address.
    let receiver = Receiver::start().await;
    let strict = client_with(false, Lookup::Fixed(vec!["127.0.0.1".parse().unwrap()]));
    let url = format!("https://rebind.example:{}/ok", receiver.port);
    assert!(check_url(&url, false).is_ok());

    let result = post(&strict, &url, Duration::from_secs(3)).await;

    assert_eq!(result.error, Some(AttemptError::RefusedAddress));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test]
async fn a_name_is_connected_through_the_resolver_when_private_networks_are_allowed() {
    let receiver = Receiver::start().await;
    let relaxed = client_with(true, Lookup::Fixed(vec!["127.0.0.1".parse().unwrap()]));
    let url = format!("http://receiver.example:{}/ok", receiver.port);

    let result = post(&relaxed, &url, Duration::from_secs(3)).await;

    assert_eq!(result.http_status, Some(200));
    assert_eq!(receiver.connections(), 1);
}

#[tokio::test]
async fn a_name_without_addresses_is_a_dns_error() {
    let result = post(
        &client_with(true, Lookup::Fixed(vec![])),
        "http://nowhere.example/ok",
        Duration::from_secs(3),
    )
    .await;

    assert_eq!(result.error, Some(AttemptError::Dns));
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);

    let url = format!("http://127.0.0.1:{port}/ok");
    let result = post(&client(true), &url, Duration::from_secs(3)).await;

    assert_eq!(result.error, Some(AttemptError::Connect));
}

#[tokio::test]
async fn a_tls_handshake_failure_is_a_tls_error() {
    // An endpoint that answers a TLS ClientHello with plain HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut hello = [0u8; 512];
            let _ = stream.read(&mut hello).await;
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });

    let url = format!("https://127.0.0.1:{port}/ok");
    let result = post(&client(true), &url, Duration::from_secs(3)).await;

    assert_eq!(result.error, Some(AttemptError::Tls));
}

#[tokio::test]
async fn resolved_host_check_refuses_names_that_only_resolve_to_private_addresses() {
    let private = client_with(false, Lookup::Fixed(vec!["10.0.0.1".parse().unwrap()]));
    let url = url::Url::parse("https://internal.example/hook").unwrap();
    assert_eq!(
        private.check_resolved_host(&url).await,
        Err(UrlError::RefusedAddress)
    );

    let mixed = client_with(
        false,
        Lookup::Fixed(vec![
            "10.0.0.1".parse().unwrap(),
            "8.8.8.8".parse().unwrap(),
        ]),
    );
    assert_eq!(mixed.check_resolved_host(&url).await, Ok(()));

    let unresolvable = client_with(false, Lookup::Fixed(vec![]));
    assert_eq!(unresolvable.check_resolved_host(&url).await, Ok(()));

    let allowed = client_with(true, Lookup::Fixed(vec!["10.0.0.1".parse().unwrap()]));
    assert_eq!(allowed.check_resolved_host(&url).await, Ok(()));
}

#[tokio::test]
async fn resolved_host_check_classifies_ip_literals_without_a_lookup() {
    let strict = client_with(false, Lookup::Fixed(vec!["8.8.8.8".parse().unwrap()]));
    for (input, expected) in [
        ("https://10.0.0.1/", Err(UrlError::RefusedAddress)),
        ("https://[fe80::1]/", Err(UrlError::RefusedAddress)),
        ("https://1.1.1.1/", Ok(())),
    ] {
        let url = url::Url::parse(input).unwrap();
        assert_eq!(strict.check_resolved_host(&url).await, expected, "{input}");
    }
}

#[test]
fn only_globally_reachable_addresses_are_kept_from_a_resolution() {
    let addrs: Vec<SocketAddr> = ["8.8.8.8:0", "10.0.0.1:0", "[::1]:0", "[2606:4700::1]:0"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();

    let kept = allowed_addresses(addrs.clone(), false).expect("some are global");
    assert_eq!(kept, [addrs[0], addrs[3]]);
    assert_eq!(allowed_addresses(addrs.clone(), true).unwrap(), addrs);

    let refused = allowed_addresses(vec![addrs[1], addrs[2]], false).unwrap_err();
    assert!(refused.is::<AddressRefused>());
    assert!(
        allowed_addresses(vec![], true)
            .unwrap_err()
            .is::<DnsFailure>()
    );
}

#[test]
fn attempt_error_names_are_the_spec_vocabulary_and_parse_back() {
    let names = [
        "timeout",
        "connect",
        "dns",
        "tls",
        "refused_address",
        "http_status",
    ];
    for name in names {
        let kind = AttemptError::parse(name).expect(name);
        assert_eq!(kind.as_str(), name);
        assert_eq!(kind.to_string(), name);
    }
    assert_eq!(AttemptError::parse("other"), None);
}

#[test]
fn retry_after_accepts_seconds_and_http_dates_only() {
    assert_eq!(
        RetryAfter::parse("120"),
        Some(RetryAfter::Delay(Duration::from_secs(120)))
    );
    assert_eq!(
        RetryAfter::parse(" 0 "),
        Some(RetryAfter::Delay(Duration::ZERO))
    );
    let date = RetryAfter::parse("Wed, 21 Oct 2015 07:28:00 GMT");
    assert_eq!(
        date,
        Some(RetryAfter::At(
            UNIX_EPOCH + Duration::from_secs(1_445_412_480)
        ))
    );
    for invalid in ["", "-1", "1.5", "soon", "120s", "Wed, 21 Oct 2015"] {
        assert_eq!(RetryAfter::parse(invalid), None, "{invalid:?}");
    }
}
