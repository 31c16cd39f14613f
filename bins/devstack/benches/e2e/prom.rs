//! Histograms read from a `/metrics` page: what one step added, and its quantiles estimated
//! as Prometheus' `histogram_quantile` does (linear within a bucket).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A histogram without labels: cumulative buckets (upper bound, count), sum and count.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// `name` (without `_bucket`) from the text exposition `page`; empty when absent.
    pub fn parse(page: &str, name: &str) -> Histogram {
        let mut histogram = Histogram::default();
        let bucket = format!("{name}_bucket{{le=\"");
        for line in page.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some(le) = series.strip_prefix(&bucket) {
                let le = le.trim_end_matches("\"}");
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                histogram.buckets.push((bound, value));
            } else if series == format!("{name}_sum") {
                histogram.sum = value;
            } else if series == format!("{name}_count") {
                histogram.count = value;
            }
        }
        histogram
    }

    /// What was observed after `before`.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let buckets = self
            .buckets
            .iter()
            .map(|(bound, count)| {
                let earlier = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b == bound)
                    .map_or(0.0, |(_, c)| *c);
                (*bound, count - earlier)
            })
            .collect();
        Histogram {
            buckets,
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile, interpolated within its bucket; the highest finite bound when it
    /// falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for (bound, count) in &self.buckets {
            if *count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = count - lower.1;
                let fraction = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * fraction);
            }
            lower = (*bound, *count);
        }
        Some(lower.0)
    }

    /// A summary for the report: count, mean, p50, p99 (milliseconds).
    pub fn summary(&self) -> serde_json::Value {
        let ms = |v: Option<f64>| v.map(|s| (s * 1e5).round() / 100.0);
        serde_json::json!({
            "count": self.count,
            "mean_ms": ms(self.mean()),
            "p50_ms": ms(self.quantile(0.5)),
            "p99_ms": ms(self.quantile(0.99)),
        })
    }

    /// The same summary on one line.
    pub fn line(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{:.1}", s * 1e3));
        format!(
            "{} samples, mean {} ms, p50 ~{} ms, p99 ~{} ms",
            self.count,
            ms(self.mean()),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99))
        )
    }
}

/// The `/metrics` page of the admin listener at `addr` (empty when it does not answer).
pub async fn scrape(addr: &str) -> String {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), fetch).await {
        Ok(Ok(response)) => response,
        _ => String::new(),
    }
}
