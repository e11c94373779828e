//! Counters and latency histograms for `/metrics`, kept in atomics so the
//! request path never takes a lock to count itself.
//!
//! This module only counts and renders the Prometheus text format; what the
//! gauges read (store revision, held WAITs, Raft state) is gathered by the web
//! module at scrape time.

use doozer_proto::{ErrCode, Verb};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Verbs in the order their counters are kept; the last slot counts unknown verbs.
const VERBS: [Option<Verb>; 22] = [
    Some(Verb::Get),
    Some(Verb::Set),
    Some(Verb::Del),
    Some(Verb::Rev),
    Some(Verb::Wait),
    Some(Verb::Nop),
    Some(Verb::Walk),
    Some(Verb::Getdir),
    Some(Verb::Stat),
    Some(Verb::SelfId),
    Some(Verb::Log),
    Some(Verb::Grant),
    Some(Verb::KeepAlive),
    Some(Verb::Revoke),
    Some(Verb::Ttl),
    Some(Verb::SetLeased),
    Some(Verb::Leases),
    Some(Verb::ForceNewCluster),
    Some(Verb::Stream),
    Some(Verb::Stop),
    Some(Verb::Access),
    None,
];

/// Result columns: success, then each error code.
const RESULTS: [Option<ErrCode>; 13] = [
    None,
    Some(ErrCode::TagInUse),
    Some(ErrCode::UnknownVerb),
    Some(ErrCode::Readonly),
    Some(ErrCode::TooLate),
    Some(ErrCode::RevMismatch),
    Some(ErrCode::BadPath),
    Some(ErrCode::MissingArg),
    Some(ErrCode::Range),
    Some(ErrCode::NotDir),
    Some(ErrCode::IsDir),
    Some(ErrCode::NoEnt),
    Some(ErrCode::Other),
];

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A Prometheus histogram: per-bucket counts (not cumulative), count and sum.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_nanos.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// The server's counters.
pub struct Metrics {
    requests: [[AtomicU64; RESULTS.len()]; VERBS.len()],
    latency: [Histogram; VERBS.len()],
    connections: AtomicI64,
    connections_total: AtomicU64,
    http: [AtomicU64; 5],
    /// Leases this node, as leader, revoked because they ran out.
    lease_expiries: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Default::default(),
            latency: Default::default(),
            connections: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            http: Default::default(),
            lease_expiries: AtomicU64::new(0),
        }
    }
}

/// Counts an open client connection until dropped.
pub struct ConnectionGuard<'a>(&'a Metrics);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}

fn verb_index(verb: Option<Verb>) -> usize {
    VERBS.iter().position(|v| *v == verb && verb.is_some()).unwrap_or(VERBS.len() - 1)
}

fn result_index(err: Option<i32>) -> usize {
    match err {
        None => 0,
        Some(n) => {
            let code = ErrCode::from_i32(n);
            RESULTS.iter().position(|r| *r == Some(code)).unwrap_or(RESULTS.len() - 1)
        }
    }
}

impl Metrics {
    /// Counts one answered request. Held WAITs are counted but not timed: their
    /// time is how long nothing happened, not how fast the server was.
    pub fn request(&self, verb: Option<Verb>, err: Option<i32>, took: Duration) {
        let v = verb_index(verb);
        self.requests[v][result_index(err)].fetch_add(1, Relaxed);
        if verb != Some(Verb::Wait) {
            self.latency[v].observe(took);
        }
    }

    /// Counts a client connection as open until the guard is dropped.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        self.connections.fetch_add(1, Relaxed);
        self.connections_total.fetch_add(1, Relaxed);
        ConnectionGuard(self)
    }

    /// Counts an HTTP answer by status class (1xx..5xx).
    pub fn http(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http[class].fetch_add(1, Relaxed);
    }

    /// Counts a lease revoked, by this node as leader, for running out.
    pub fn lease_expired(&self) {
        self.lease_expiries.fetch_add(1, Relaxed);
    }

    /// The counters in Prometheus text format (version 0.0.4).
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP doozer_requests_total Client protocol requests answered, by verb and result.\n");
        out.push_str("# TYPE doozer_requests_total counter\n");
        for (v, verb) in VERBS.iter().enumerate() {
            for (r, result) in RESULTS.iter().enumerate() {
                let n = self.requests[v][r].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "doozer_requests_total{{verb=\"{}\",result=\"{}\"}} {n}",
                        verb.map_or("UNKNOWN", Verb::name),
                        result.map_or("OK", ErrCode::name)
                    );
                }
            }
        }
        out.push_str("# HELP doozer_request_duration_seconds Time from receiving a request to queueing its answer (held WAITs excluded).\n");
        out.push_str("# TYPE doozer_request_duration_seconds histogram\n");
        for (v, verb) in VERBS.iter().enumerate() {
            if self.latency[v].count.load(Relaxed) > 0 {
                let labels = format!("verb=\"{}\"", verb.map_or("UNKNOWN", Verb::name));
                self.latency[v].render(out, "doozer_request_duration_seconds", &labels);
            }
        }
        gauge(out, "doozer_client_connections", "Open client connections.", self.connections.load(Relaxed));
        out.push_str("# HELP doozer_client_connections_total Client connections accepted.\n");
        out.push_str("# TYPE doozer_client_connections_total counter\n");
        let _ = writeln!(out, "doozer_client_connections_total {}", self.connections_total.load(Relaxed));
        out.push_str("# HELP doozer_lease_expiries_total Leases this node revoked as leader because they ran out.\n");
        out.push_str("# TYPE doozer_lease_expiries_total counter\n");
        let _ = writeln!(out, "doozer_lease_expiries_total {}", self.lease_expiries.load(Relaxed));
        out.push_str("# HELP doozer_http_responses_total HTTP answers, by status class.\n");
        out.push_str("# TYPE doozer_http_responses_total counter\n");
        for (i, n) in self.http.iter().enumerate() {
            let _ = writeln!(out, "doozer_http_responses_total{{code=\"{}xx\"}} {}", i + 1, n.load(Relaxed));
        }
    }
}

/// Writes one gauge with its help line.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let m = Metrics::default();
        m.request(Some(Verb::Set), None, Duration::from_micros(300));
        m.request(Some(Verb::Set), Some(ErrCode::RevMismatch as i32), Duration::from_millis(2));
        m.request(None, Some(ErrCode::UnknownVerb as i32), Duration::from_micros(10));
        m.request(Some(Verb::Wait), None, Duration::from_secs(100));
        let _c = m.connection();
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("doozer_requests_total{verb=\"SET\",result=\"OK\"} 1\n"), "{out}");
        assert!(out.contains("doozer_requests_total{verb=\"SET\",result=\"REV_MISMATCH\"} 1\n"));
        assert!(out.contains("doozer_requests_total{verb=\"UNKNOWN\",result=\"UNKNOWN_VERB\"} 1\n"));
        assert!(out.contains("doozer_requests_total{verb=\"WAIT\",result=\"OK\"} 1\n"));
        assert!(out.contains("doozer_request_duration_seconds_bucket{verb=\"SET\",le=\"0.0005\"} 1\n"));
        assert!(out.contains("doozer_request_duration_seconds_bucket{verb=\"SET\",le=\"0.0025\"} 2\n"));
        assert!(out.contains("doozer_request_duration_seconds_count{verb=\"SET\"} 2\n"));
        assert!(!out.contains("duration_seconds_count{verb=\"WAIT\"}"));
        assert!(out.contains("doozer_client_connections 1\n"));
    }
}
