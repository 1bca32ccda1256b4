//! Prometheus metrics (SPEC section 9). Each node owns its recorder (no global), and
//! the hot-path series are registered once as handles so recording is one atomic op.

use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use parking_lot::Mutex;

pub const CONNECTIONS: &str = "switchyard_connections";
pub const CONNECTIONS_ACCEPTED: &str = "switchyard_connections_accepted_total";
pub const CONNECTIONS_REJECTED: &str = "switchyard_connections_rejected_total";
pub const DISCONNECTS: &str = "switchyard_disconnects_total";
pub const SUBSCRIPTIONS: &str = "switchyard_subscriptions";
pub const CHANNELS: &str = "switchyard_channels";
pub const MESSAGES_IN: &str = "switchyard_messages_in_total";
pub const MESSAGES_OUT: &str = "switchyard_messages_out_total";
pub const PUBLICATIONS: &str = "switchyard_publications_total";
pub const DELIVERY_LATENCY: &str = "switchyard_delivery_latency_seconds";
pub const BROKER_UP: &str = "switchyard_broker_up";
pub const BROKER_RECONNECTS: &str = "switchyard_broker_reconnects_total";
pub const BROKER_PUBLISH: &str = "switchyard_broker_publish_seconds";
pub const SLOW_CONSUMERS: &str = "switchyard_slow_consumers_total";
pub const RATE_LIMITED: &str = "switchyard_rate_limited_total";
pub const AUTH_FAILURES: &str = "switchyard_auth_failures_total";
pub const API_REQUESTS: &str = "switchyard_api_requests_total";
pub const API_REQUEST_SECONDS: &str = "switchyard_api_request_seconds";
pub const RECEIPTS: &str = "switchyard_receipts_total";
pub const FALLBACKS: &str = "switchyard_fallbacks_total";
pub const IDEMPOTENT_DUPLICATES: &str = "switchyard_idempotent_duplicates_total";
pub const STATE_KEYS: &str = "switchyard_state_keys";
pub const CONFLATED: &str = "switchyard_conflated_total";
pub const DELTA_BYTES_SAVED: &str = "switchyard_delta_bytes_saved_total";
pub const EVENTS: &str = "switchyard_events_total";
pub const WEBHOOK_REQUESTS: &str = "switchyard_webhook_requests_total";
pub const WEBHOOK_DEAD: &str = "switchyard_webhook_dead_total";

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One node's metrics. Cloning handles is cheap; all share the node's recorder.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Labelled counters, created on first use. The label values are bounded sets
    /// (codes, reasons, namespaces' types), never raw channel names or user ids.
    labelled: Mutex<HashMap<(&'static str, &'static str, String), Counter>>,
    pub connections: Gauge,
    pub connections_accepted: Counter,
    pub subscriptions: Gauge,
    pub channels: Gauge,
    pub messages_out: Counter,
    pub delivery_latency: Histogram,
    pub broker_up: Gauge,
    pub broker_reconnects: Counter,
    pub broker_publish: Histogram,
    pub slow_consumers: Counter,
    pub rate_limited: Counter,
    pub api_request_seconds: Histogram,
    pub receipts: Counter,
    pub idempotent_duplicates: Counter,
    pub state_keys: Gauge,
    pub conflated: Counter,
    pub delta_bytes_saved: Counter,
    pub webhook_dead: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut builder = PrometheusBuilder::new();
        for name in [DELIVERY_LATENCY, BROKER_PUBLISH, API_REQUEST_SECONDS] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| unreachable!("bucket list is non-empty"));
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let r = &recorder;
        let counter = |n: &'static str| r.register_counter(&Key::from_static_name(n), &META);
        let gauge = |n: &'static str| r.register_gauge(&Key::from_static_name(n), &META);
        let histogram = |n: &'static str| r.register_histogram(&Key::from_static_name(n), &META);
        r.describe_histogram(
            DELIVERY_LATENCY.into(),
            Some(Unit::Seconds),
            "publish accepted to written to the socket".into(),
        );
        Metrics {
            connections: gauge(CONNECTIONS),
            connections_accepted: counter(CONNECTIONS_ACCEPTED),
            subscriptions: gauge(SUBSCRIPTIONS),
            channels: gauge(CHANNELS),
            messages_out: counter(MESSAGES_OUT),
            delivery_latency: histogram(DELIVERY_LATENCY),
            broker_up: gauge(BROKER_UP),
            broker_reconnects: counter(BROKER_RECONNECTS),
            broker_publish: histogram(BROKER_PUBLISH),
            slow_consumers: counter(SLOW_CONSUMERS),
            rate_limited: counter(RATE_LIMITED),
            api_request_seconds: histogram(API_REQUEST_SECONDS),
            receipts: counter(RECEIPTS),
            idempotent_duplicates: counter(IDEMPOTENT_DUPLICATES),
            state_keys: gauge(STATE_KEYS),
            conflated: counter(CONFLATED),
            delta_bytes_saved: counter(DELTA_BYTES_SAVED),
            webhook_dead: counter(WEBHOOK_DEAD),
            labelled: Mutex::new(HashMap::new()),
            handle,
            recorder,
        }
    }

    /// A counter with one label, e.g. `counter(DISCONNECTS, "code", "4010")`.
    pub fn counter(&self, name: &'static str, label: &'static str, value: &str) -> Counter {
        let mut map = self.labelled.lock();
        map.entry((name, label, value.to_owned()))
            .or_insert_with(|| {
                let key = Key::from_parts(name, vec![Label::new(label, value.to_owned())]);
                self.recorder.register_counter(&key, &META)
            })
            .clone()
    }

    /// One lifecycle event appended (SPEC 17), by kind.
    pub fn event(&self, kind: crate::config::EventKind, n: u64) {
        if n > 0 {
            self.counter(EVENTS, "event", kind.as_str()).increment(n);
        }
    }

    pub fn api_request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        let key = Key::from_parts(
            API_REQUESTS,
            vec![
                Label::new("endpoint", endpoint),
                Label::new("status", status.to_string()),
            ],
        );
        self.recorder.register_counter(&key, &META).increment(1);
        self.api_request_seconds.record(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets; called periodically so
    /// samples do not pile up between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
