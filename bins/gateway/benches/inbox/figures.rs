//! The inbox benchmark's figures as JSON, for `target/bench-results/inbox.json`.

use serde_json::{Value, json};

use crate::results::round2;
use crate::{Endpoint, Measured};

impl Endpoint {
    /// A short stable name for the results file.
    pub fn key(self) -> &'static str {
        match self {
            Endpoint::Page => "page",
            Endpoint::PageHeavy => "page_heavy",
            Endpoint::Count => "count",
            Endpoint::CountHeavy => "count_heavy",
            Endpoint::Keyset => "keyset_heavy",
            Endpoint::Read => "mark_read",
        }
    }
}

impl Measured {
    /// One side's figures: rate, latency (the latencies must be sorted), CPU per request.
    pub fn json(&self) -> Value {
        let per_request = |i: usize| round2(self.cpu[i] * 1e6 / self.requests().max(1.0));
        json!({
            "requests": self.requests(),
            "seconds": round2(self.seconds),
            "req_per_sec": self.rate().round(),
            "p50_ms": round2(self.ms(0.50)),
            "p99_ms": round2(self.ms(0.99)),
            "max_ms": round2(self.ms(1.0)),
            "failures": self.tally.failures,
            "cpu_us_per_request": {
                "gateway": per_request(0),
                "mariadb": per_request(1),
                "bench": per_request(2),
            },
            "other_processes_cores": round2(self.cpu[3] / self.seconds.max(1e-9)),
            "buffer_pool_misses_per_request": round2(self.misses / self.requests().max(1.0)),
        })
    }
}

/// Every endpoint's REST and direct figures.
pub fn endpoints(table: &[(Endpoint, Measured, Measured)]) -> Value {
    table
        .iter()
        .map(|(endpoint, rest, direct)| {
            json!({
                "endpoint": endpoint.key(),
                "label": endpoint.label(),
                "rest": rest.json(),
                "direct": direct.json(),
                "rest_over_direct": round2(rest.rate() / direct.rate()),
            })
        })
        .collect()
}
