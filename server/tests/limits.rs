//! Connection limits and header timeouts on both listeners, against the real
//! server: a client that sends its headers slowly (slowloris) is cut off, an
//! idle connection is closed whether it speaks HTTP/1.1 or HTTP/2, and
//! connections beyond the limit wait until one closes.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use control::testing::TestDb;
use helpers::TestApp;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; `true` if it did within `within`.
async fn closed_by_server<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_on_both_listeners() {
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.header_read_timeout_secs = 1;
    })
    .await;

    // Web: half a request, then silence.
    let mut web = TcpStream::connect(app.addr.trim_start_matches("http://"))
        .await
        .unwrap();
    web.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut web, Duration::from_secs(10)).await,
        "the web listener kept a slowloris connection"
    );

    // Gateway: a completed TLS handshake, then half a request.
    let ca_pem = std::fs::read_to_string(app.dir.path().join("agent-ca.crt")).unwrap();
    let config = helpers::tls::client_config(&ca_pem, &[&rustls::version::TLS13]);
    let tcp = TcpStream::connect(app.agent_addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"POST /agent/v1/token HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert!(
        closed_by_server(&mut tls, Duration::from_secs(10)).await,
        "the gateway kept a slowloris connection"
    );

    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(app.addr.trim_start_matches("http://"))
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(10)).await,
        "an idle keep-alive connection stayed open"
    );
}

/// The HTTP/2 client preface and an empty SETTINGS frame: a client that has
/// opened an HTTP/2 connection and then sends nothing.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_on_both_listeners() {
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.header_read_timeout_secs = 1;
    })
    .await;

    // Web: HTTP/2 with prior knowledge on the plain listener.
    let mut web = TcpStream::connect(app.addr.trim_start_matches("http://"))
        .await
        .unwrap();
    web.write_all(H2_PREFACE).await.unwrap();
    assert!(
        closed_by_server(&mut web, Duration::from_secs(10)).await,
        "the web listener kept an idle HTTP/2 connection"
    );

    // Gateway: HTTP/2 chosen by ALPN, no client certificate, then silence.
    let ca_pem = std::fs::read_to_string(app.dir.path().join("agent-ca.crt")).unwrap();
    let mut config = (*helpers::tls::client_config(&ca_pem, &[&rustls::version::TLS13])).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(app.agent_addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the gateway does not offer HTTP/2"
    );
    tls.write_all(H2_PREFACE).await.unwrap();
    tls.flush().await.unwrap();
    assert!(
        closed_by_server(&mut tls, Duration::from_secs(10)).await,
        "the gateway kept an idle HTTP/2 connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_one_to_close() {
    let app = TestApp::spawn_with(TestDb::sqlite().await, |c| {
        c.max_connections = 2;
        c.header_read_timeout_secs = 60;
    })
    .await;
    let addr = app.addr.trim_start_matches("http://").to_string();
    let first = TcpStream::connect(&addr).await.unwrap();
    let _second = TcpStream::connect(&addr).await.unwrap();
    // Give the server a moment to take both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let third = client.get(app.url("/healthz")).send().await;
    assert!(
        third.is_err(),
        "a third connection was served beyond the limit of 2: {third:?}"
    );
    drop(first);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = client.get(app.url("/healthz")).send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}
