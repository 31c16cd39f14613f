//! The SockJS protocol's conformance services on our SockJS layer, for running the
//! official test suite (sockjs-protocol) against it:
//!
//! - `/echo`: sends every message back;
//! - `/close`: closes every session at once (`c[3000,"Go away!"]`);
//! - `/disabled_websocket_echo`: `/echo` without the WebSocket transports;
//! - `/cookie_needed_echo`: `/echo` that sets `JSESSIONID` cookies.
//!
//! Streaming responses end after 4 KiB, as the suite expects of its test server.
//!
//! ```text
//! cargo run -p gateway --example sockjs_echo -- 127.0.0.1:8081
//! SOCKJS_URL=http://127.0.0.1:8081 python sockjs-protocol.py
//! ```

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use gateway::outlet::End;
use gateway::sockjs::{self, Application, Connection, Options, Refusal, Service};

struct Echo;

impl Application for Echo {
    type Admission = ();

    fn admit(&self, _headers: &HeaderMap) -> Result<(), Refusal> {
        Ok(())
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "the session future must not borrow the application"
    )]
    fn run(&self, _: (), mut connection: Connection) -> impl Future<Output = ()> + Send + 'static {
        async move {
            while let Some(message) = connection.from_client.recv().await {
                let text = String::from_utf8_lossy(&message).into_owned();
                if connection
                    .to_client
                    .send(text, Duration::from_secs(10))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            connection.to_client.close(End::ClientClosed);
        }
    }
}

struct Close;

impl Application for Close {
    type Admission = ();

    fn admit(&self, _headers: &HeaderMap) -> Result<(), Refusal> {
        Ok(())
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "the session future must not borrow the application"
    )]
    fn run(&self, _: (), connection: Connection) -> impl Future<Output = ()> + Send + 'static {
        async move { connection.to_client.close(End::Done) }
    }
}

#[tokio::main]
#[expect(
    clippy::print_stderr,
    reason = "a command-line tool reports its address"
)]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into());
    let options = Options {
        stream_limit: 4096,
        client_url: "http://localhost:8081/lib/sockjs.js".into(),
        ..Options::default()
    };
    let mut app = Router::new();
    for base in [
        "/echo",
        "/close",
        "/disabled_websocket_echo",
        "/cookie_needed_echo",
    ] {
        app = app.route(&format!("{base}/"), get(sockjs::greeting));
    }
    let app = app
        .nest("/echo", sockjs::router(Service::new(Echo, options.clone())))
        .nest(
            "/close",
            sockjs::router(Service::new(Close, options.clone())),
        )
        .nest(
            "/disabled_websocket_echo",
            sockjs::router(Service::new(
                Echo,
                Options {
                    websocket: false,
                    ..options.clone()
                },
            )),
        )
        .nest(
            "/cookie_needed_echo",
            sockjs::router(Service::new(
                Echo,
                Options {
                    cookie_needed: true,
                    fixed_cookie: Some("dummy"),
                    ..options
                },
            )),
        );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "SockJS conformance services on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
