//! Webhooks (SPEC 17): each `[[webhooks]]` table gets one task per node. The node
//! holding the webhook's lease reads its consumer group in batches (at most 100 events,
//! no waiting beyond 100 ms), POSTs each batch signed with HMAC-SHA256 over
//! `<timestamp>.<body>`, retries with exponential backoff and jitter, moves what still
//! fails after `max_attempts` to the dead-letter stream, and acknowledges. One holder
//! at a time keeps events in order; a holder that dies loses the lease and the next
//! one takes over its unacknowledged entries. Sockets and the API never wait on this.

use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::events::Event;
use crate::metrics::WEBHOOK_REQUESTS;
use crate::node::Node;

/// Events per request, and how long a quiet stream is waited on before reading again.
const BATCH: usize = 100;
const WINDOW: Duration = Duration::from_millis(100);
/// How long a lease lasts without renewal (a dead holder's webhook resumes after it).
const LEASE: Duration = Duration::from_secs(5);
const RETRY_CAP: Duration = Duration::from_secs(60);

/// One webhook as the dispatcher sees it.
struct Hook {
    cfg: WebhookConfig,
    /// Its consumer group (and lease): named after its URL, so every node agrees.
    group: String,
    http: reqwest::Client,
}

/// The consumer group of a webhook URL.
pub fn group_of(url: &str) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(url.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("webhook-{hex}")
}

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` (the
/// `X-Switchyard-Signature` header).
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot fail.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The wait before attempt `attempt + 1`: 200 ms doubling, capped, times `jitter`
/// (0.5 to 1.5), so receivers that failed together are not retried together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = Duration::from_millis(200).saturating_mul(1 << attempt.min(16));
    base.min(RETRY_CAP).mul_f64(jitter.clamp(0.5, 1.5))
}

/// Starts one dispatcher per configured webhook.
pub fn spawn(node: &Arc<Node>) {
    for cfg in &node.config.webhooks {
        let http = match reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(url = %cfg.url, error = %e, "webhook client could not be built");
                continue;
            }
        };
        let hook = Hook {
            group: group_of(&cfg.url),
            cfg: cfg.clone(),
            http,
        };
        tokio::spawn(run(Arc::downgrade(node), hook));
    }
}

async fn run(node: Weak<Node>, hook: Hook) {
    loop {
        let Some(n) = node.upgrade() else { return };
        let me = n.node_id().to_owned();
        let cluster = n.brokers.cluster.clone();
        drop(n);
        match cluster.lease(&hook.group, &me, LEASE).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                // Another node delivers (or the broker is away): look again soon.
                tokio::time::sleep(LEASE / 4).await;
                continue;
            }
        }
        let batch = match cluster.consume_events(&hook.group, &me, BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "webhook events unreadable; retrying");
                tokio::time::sleep(WINDOW * 5).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::time::sleep(WINDOW).await;
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        let events: Vec<Event> = batch
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| hook.cfg.events.is_empty() || hook.cfg.events.contains(&e.event))
            .collect();
        if !events.is_empty() {
            deliver(&node, &hook, &me, &events).await;
        }
        // Acknowledged only once delivered or dead-lettered: a crash before this
        // delivers the batch again (at least once).
        while let Err(e) = cluster.ack_events(&hook.group, &ids).await {
            tracing::debug!(error = %e, "webhook ack failed; retrying");
            tokio::time::sleep(WINDOW * 5).await;
            if node.strong_count() == 0 {
                return;
            }
        }
    }
}

/// POSTs one batch until it is taken or `max_attempts` ran out (then dead-lettered).
async fn deliver(node: &Weak<Node>, hook: &Hook, me: &str, events: &[Event]) {
    let body = match serde_json::to_vec(&serde_json::json!({ "events": events })) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "webhook batch not encodable");
            return;
        }
    };
    let attempts = hook.cfg.max_attempts.max(1);
    let mut last_error = String::new();
    for attempt in 1..=attempts {
        let Some(n) = node.upgrade() else { return };
        let metrics = n.metrics.clone();
        let cluster = n.brokers.cluster.clone();
        drop(n);
        let ts = crate::auth::unix_now();
        let sent = hook
            .http
            .post(&hook.cfg.url)
            .header("Content-Type", "application/json")
            .header("X-Switchyard-Timestamp", ts.to_string())
            .header(
                "X-Switchyard-Signature",
                signature(&hook.cfg.secret, ts, &body),
            )
            .body(body.clone())
            .send()
            .await;
        let status = match &sent {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        metrics
            .counter(WEBHOOK_REQUESTS, "status", &status)
            .increment(1);
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => last_error = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last_error = e.without_url().to_string(),
        }
        if attempt < attempts {
            tokio::time::sleep(backoff(attempt - 1, 0.5 + rand::random::<f64>())).await;
            // Still the holder while retrying; a lost lease means another node took
            // over, which redelivers from the group (at least once).
            if !matches!(cluster.lease(&hook.group, me, LEASE).await, Ok(true)) {
                return;
            }
        }
    }
    let Some(n) = node.upgrade() else { return };
    tracing::warn!(url = %hook.cfg.url, events = events.len(), error = %last_error, "webhook gave up: events moved to the dead-letter stream");
    n.metrics.webhook_dead.increment(events.len() as u64);
    if let Err(e) = n
        .brokers
        .cluster
        .dead_letter(events, &hook.cfg.url, &last_error)
        .await
    {
        tracing::error!(error = %e, "dead letters could not be written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Checked against a value computed independently:
        // printf '1700000000.{"events":[]}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            signature("s3cret", 1_700_000_000, br#"{"events":[]}"#),
            "sha256=41b4d3f6c59a79e37d083fb3cbe77f82807c4369fd469fb70cfa75e02d2e2775"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        assert_eq!(backoff(0, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(1600));
        assert_eq!(backoff(30, 1.0), RETRY_CAP);
        assert_eq!(backoff(1, 0.5), Duration::from_millis(200));
        assert_eq!(
            backoff(1, 9.0),
            Duration::from_millis(600),
            "jitter clamped"
        );
    }

    #[test]
    fn a_webhook_group_is_named_after_its_url() {
        assert_eq!(group_of("http://a/hook"), group_of("http://a/hook"));
        assert_ne!(group_of("http://a/hook"), group_of("http://b/hook"));
        assert!(group_of("http://a/hook").starts_with("webhook-"));
    }
}
