//! Prometheus metrics, in the text exposition format, written by hand: request counts by
//! route, method and status, a latency histogram by route, and workspaces by state.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Request metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, method, status) -> count
    requests: BTreeMap<(String, String, u16), u64>,
    /// route -> histogram
    latency: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Records one finished request (time to its response's headers).
    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests.entry((route.to_owned(), method.to_owned(), status)).or_default() += 1;
        let h = m.latency.entry(route.to_owned()).or_default();
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The text format, with `workspaces` (state -> count) appended.
    pub fn render(&self, workspaces: &BTreeMap<String, u64>, up: bool) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(out, "# HELP warren_http_requests_total HTTP requests by route, method and status.");
        let _ = writeln!(out, "# TYPE warren_http_requests_total counter");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "warren_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                esc(route),
                esc(method)
            );
        }
        let _ = writeln!(out, "# HELP warren_http_request_duration_seconds Time to the response headers, by route.");
        let _ = writeln!(out, "# TYPE warren_http_request_duration_seconds histogram");
        for (route, h) in &m.latency {
            let r = esc(route);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "warren_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ =
                writeln!(out, "warren_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "warren_http_request_duration_seconds_sum{{route=\"{r}\"}} {}", h.sum);
            let _ = writeln!(out, "warren_http_request_duration_seconds_count{{route=\"{r}\"}} {}", h.count);
        }
        let _ = writeln!(out, "# HELP warren_workspaces Workspaces by state, as the host shows them.");
        let _ = writeln!(out, "# TYPE warren_workspaces gauge");
        for (state, n) in workspaces {
            let _ = writeln!(out, "warren_workspaces{{state=\"{}\"}} {n}", esc(state));
        }
        let _ = writeln!(out, "# HELP warren_up 1 when the state store answered this scrape.");
        let _ = writeln!(out, "# TYPE warren_up gauge");
        let _ = writeln!(out, "warren_up {}", u8::from(up));
        out
    }

    /// Per-workspace gauges from the resource monitor's last sample of each workspace.
    pub fn render_usage(out: &mut String, usage: &[warren_engine::Usage]) {
        type Gauge = (&'static str, &'static str, fn(&warren_engine::Usage) -> Option<f64>);
        let gauges: [Gauge; 8] = [
            ("warren_workspace_cpu_percent", "CPU use, percent of one core, over the last window.", |u| u.cpu_percent),
            ("warren_workspace_memory_bytes", "Memory in use.", |u| Some(u.memory_bytes as f64)),
            ("warren_workspace_memory_limit_bytes", "Memory limit.", |u| u.memory_limit_bytes.map(|v| v as f64)),
            ("warren_workspace_pids", "Processes and threads.", |u| Some(u.pids as f64)),
            ("warren_workspace_pids_limit", "Pids limit.", |u| u.pids_limit.map(f64::from)),
            ("warren_workspace_disk_bytes", "Bytes of the workspace's files.", |u| Some(u.disk_bytes as f64)),
            ("warren_workspace_disk_limit_bytes", "Disk limit (quota).", |u| u.disk_limit_bytes.map(|v| v as f64)),
            ("warren_workspace_over_threshold", "Resources over the monitor threshold now.", |u| {
                Some(u.over.len() as f64)
            }),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help} From the resource monitor's last sample.");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for u in usage {
                if let Some(v) = get(u) {
                    let _ = writeln!(out, "{name}{{user=\"{}\",backend=\"{}\"}} {v}", esc(u.user.as_str()), u.backend);
                }
            }
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histograms() {
        let m = Metrics::default();
        m.observe("/v1/workspaces/{user}", "GET", 200, Duration::from_millis(3));
        m.observe("/v1/workspaces/{user}", "GET", 200, Duration::from_millis(30));
        m.observe("/v1/workspaces/{user}", "GET", 404, Duration::from_secs(20));
        let ws = BTreeMap::from([("running".to_owned(), 2), ("stopped".to_owned(), 1)]);
        let text = m.render(&ws, true);
        assert!(
            text.contains(
                "warren_http_requests_total{route=\"/v1/workspaces/{user}\",method=\"GET\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"10\"} 2"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("warren_workspaces{state=\"running\"} 2"), "{text}");
    }
}
