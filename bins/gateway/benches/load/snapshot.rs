//! What the broadcast phase reads around each measurement: the gateway's broadcast metrics
//! (from its admin listener) and the CPU the gateway, the clients and Redis used.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::arrivals::Fleet;
use crate::process::{Gateway, cpu_seconds};
use crate::results::round2;

/// The gateway's broadcast counters and the CPU used so far.
#[derive(Clone, Copy, Default)]
pub struct Snapshot {
    pub deliveries: f64,
    pub fanout_sum: f64,
    pub fanout_count: f64,
    pub gateway_cpu: f64,
    pub clients_cpu: f64,
    pub redis_cpu: f64,
}

impl Snapshot {
    pub async fn take(gw: &Gateway, fleet: &Fleet, redis_pid: Option<u32>) -> Snapshot {
        let text = admin_metrics(&gw.admin).await.unwrap_or_default();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        Snapshot {
            deliveries: value("gateway_broadcast_deliveries_total"),
            fanout_sum: value("gateway_broadcast_fanout_seconds_sum"),
            fanout_count: value("gateway_broadcast_fanout_seconds_count"),
            gateway_cpu: cpu_seconds(gw.child.id()),
            clients_cpu: fleet.client_pids().into_iter().map(cpu_seconds).sum(),
            redis_cpu: redis_pid.map_or(0.0, cpu_seconds),
        }
    }

    pub fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            deliveries: self.deliveries - before.deliveries,
            fanout_sum: self.fanout_sum - before.fanout_sum,
            fanout_count: self.fanout_count - before.fanout_count,
            gateway_cpu: self.gateway_cpu - before.gateway_cpu,
            clients_cpu: self.clients_cpu - before.clients_cpu,
            redis_cpu: self.redis_cpu - before.redis_cpu,
        }
    }

    /// The fan-out task's time per broadcast, in ms.
    pub fn fanout_ms(self) -> f64 {
        self.fanout_sum * 1000.0 / self.fanout_count.max(1.0)
    }

    pub fn cpu_json(self) -> Value {
        json!({
            "gateway_cpu_secs": round2(self.gateway_cpu),
            "clients_cpu_secs": round2(self.clients_cpu),
            "redis_cpu_secs": round2(self.redis_cpu),
        })
    }

    pub fn cpu(self) -> String {
        format!(
            "CPU gateway {:.2} s, clients {:.2} s, Redis {:.2} s",
            self.gateway_cpu, self.clients_cpu, self.redis_cpu
        )
    }
}

/// The admin listener's `/metrics` text.
async fn admin_metrics(admin: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(admin).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}
