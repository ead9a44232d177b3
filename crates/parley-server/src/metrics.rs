//! Prometheus metrics (`/metrics`): connections, queue depth, sends, commit group sizes,
//! delivery latency, process memory. The recorder is process-wide and installed once.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::SharedState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "parley_delivery_latency_seconds".into(),
                    ),
                    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0],
                )
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .clone()
}

/// Resident set size of this process, from /proc (Linux); 0 elsewhere.
pub fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Renders the metrics, refreshing the gauges that are read at scrape time.
pub async fn render(state: &SharedState) -> String {
    if let Ok(s) = state.store.stats().await {
        metrics::gauge!("parley_accounts").set(s.accounts as f64);
        metrics::gauge!("parley_devices").set(s.devices as f64);
        metrics::gauge!("parley_queued_envelopes").set(s.queued as f64);
    }
    let c = state.store.commit_stats();
    metrics::counter!("parley_commits_total").absolute(c.commits);
    metrics::counter!("parley_committed_operations_total").absolute(c.operations);
    let mean = if c.commits == 0 { 0.0 } else { c.operations as f64 / c.commits as f64 };
    metrics::gauge!("parley_commit_group_mean").set(mean);
    metrics::gauge!("parley_ws_connected_devices").set(state.hub.connections() as f64);
    metrics::gauge!("parley_process_resident_bytes").set(resident_bytes() as f64);
    install().map(|h| h.render()).unwrap_or_default()
}
