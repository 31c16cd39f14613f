//! The gateway process seam: binds, answers health checks, stops on shutdown.

use std::time::Duration;

use gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const STOP_WITHIN: Duration = Duration::from_secs(5);

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn gateway_answers_healthz_and_stops_on_shutdown() {
    let config = GatewayConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
    };
    let gateway = Gateway::bind(&config).await.unwrap();
    let addr = gateway.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(gateway.run(shutdown.clone()));

    let response = http_get(addr, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");

    shutdown.cancel();
    let stopped = tokio::time::timeout(STOP_WITHIN, server).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "gateway did not stop: {stopped:?}"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}
