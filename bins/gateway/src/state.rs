//! What every connection task shares: the hub, the authenticator, the limits, the
//! metrics, the shutdown token, the allowed origins and the connection permits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::hub::Hub;
use crate::metrics::GatewayMetrics;
use crate::session::SessionConfig;
use crate::sync::Sync;
use shared::channel::Channels;

/// Per-connection limits, shared by every transport.
#[derive(Debug, Clone)]
pub struct Limits {
    pub session: SessionConfig,
    pub max_frame_bytes: usize,
    pub max_headers: usize,
    pub first_frame_timeout: Duration,
    pub send_timeout: Duration,
    /// Close a session (ERROR `JWT expired`) when the JWT it connected with expires.
    pub close_on_token_expiry: bool,
}

/// Which browser origins may connect.
#[derive(Debug, Clone)]
pub struct Origins(Option<Vec<String>>);

impl Origins {
    pub fn new(list: &[String]) -> Origins {
        let list: Vec<String> = list
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if list.is_empty() || list.iter().any(|o| o == "*") {
            Origins(None)
        } else {
            Origins(Some(list))
        }
    }

    /// The allowed origins; `None`: any.
    pub fn list(&self) -> Option<&[String]> {
        self.0.as_deref()
    }

    /// Whether a request with these headers may connect.
    pub fn allows(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(list) = &self.0 else { return true };
        match headers
            .get(axum::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        {
            None => true,
            Some(origin) => list
                .iter()
                .any(|allowed| allowed == origin.trim_end_matches('/')),
        }
    }
}

/// What every connection task shares.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub channels: Channels,
    pub sync: Sync,
    pub auth: Authenticator,
    pub limits: Limits,
    pub metrics: GatewayMetrics,
    pub shutdown: CancellationToken,
    pub origins: Origins,
    pub connections: Arc<Semaphore>,
}
