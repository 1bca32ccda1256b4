//! Conflation without sockets: the clock is passed in.

use super::*;
use crate::protocol::Delta;
use serde_json::value::RawValue;

fn keyed(key: &str, offset: u64) -> Arc<Publication> {
    let ch = ChannelName::parse("ticker:x").expect("valid");
    let payload = RawValue::from_string(format!("{{\"o\":{offset}}}")).expect("json");
    let mut p = Publication::new(ch, "tick".into(), payload);
    p.key = Some(key.into());
    p.offset = Some(offset);
    Arc::new(p)
}

fn sent(o: &Outbox) -> Vec<String> {
    let mut out = Vec::new();
    o.drain_data(1000, &mut out);
    out.iter()
        .map(|(b, _)| {
            let v: serde_json::Value = serde_json::from_slice(b).expect("json");
            let mark = if v["conflated"] == true { "*" } else { "" };
            let delta = if v["delta"] == true { "d" } else { "" };
            format!(
                "{}{}{mark}{delta}",
                v["key"].as_str().unwrap_or("-"),
                v["offset"]
            )
        })
        .collect()
}

const IV: Duration = Duration::from_millis(250);

#[test]
fn the_first_goes_at_once_and_the_newest_when_the_interval_ends() {
    let o = Outbox::new(100, usize::MAX);
    let t0 = Instant::now();
    assert_eq!(
        o.push_conflated(&keyed("a", 1), IV, false, t0),
        Pushed::Queued
    );
    assert_eq!(sent(&o), ["a1"]);
    assert_eq!(
        o.push_conflated(&keyed("a", 2), IV, false, t0),
        Pushed::Queued
    );
    assert_eq!(
        o.push_conflated(&keyed("a", 3), IV, false, t0),
        Pushed::Conflated
    );
    assert_eq!(
        o.push_conflated(&keyed("b", 4), IV, false, t0),
        Pushed::Queued
    );
    assert_eq!(
        sent(&o),
        ["b4"],
        "a waits for its interval; b is another key"
    );
    assert_eq!(o.next_due(), Some(t0 + IV));
    o.release_due(t0 + IV / 2);
    assert!(sent(&o).is_empty(), "not yet");
    o.release_due(t0 + IV);
    assert_eq!(
        sent(&o),
        ["a3*"],
        "the newest, marked as having replaced others"
    );
    // Quiet keys are forgotten after their interval: nothing is held for them.
    o.release_due(t0 + IV * 3);
    assert_eq!(o.next_due(), None);
    assert!(o.state.lock().conflation.is_none());
}

#[test]
fn a_full_queue_replaces_a_key_instead_of_closing() {
    let o = Outbox::new(3, usize::MAX);
    let t0 = Instant::now();
    for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(
            o.push_conflated(&keyed(k, i as u64 + 1), IV, false, t0),
            Pushed::Queued
        );
    }
    // The reader is stalled: the queue is full, and more of the same keys arrive.
    for offset in 4..1000 {
        let k = ["a", "b", "c"][offset as usize % 3];
        assert_eq!(
            o.push_conflated(&keyed(k, offset), IV, false, t0),
            Pushed::Conflated
        );
    }
    assert!(
        !o.is_closing(),
        "distinct pending keys fit: not a slow consumer"
    );
    assert_eq!(o.state.lock().data, 3, "one publication per key is held");
    assert_eq!(
        sent(&o),
        ["a999*", "b997*", "c998*"],
        "each key in its place, newest"
    );
}

#[test]
fn more_distinct_keys_than_the_queue_holds_is_a_slow_consumer() {
    let o = Outbox::new(3, usize::MAX);
    let t0 = Instant::now();
    for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
        o.push_conflated(&keyed(k, i as u64 + 1), IV, false, t0);
    }
    assert_eq!(
        o.push_conflated(&keyed("d", 4), IV, false, t0),
        Pushed::Overflowed
    );
    assert!(o.is_closing());
}

#[test]
fn a_delta_goes_out_only_against_the_version_this_subscriber_was_sent() {
    let o = Outbox::new(100, usize::MAX);
    let t0 = Instant::now();
    let with_delta = |offset: u64, base: u64| {
        let p = keyed("a", offset);
        let patch = RawValue::from_string(format!("{{\"o\":{offset}}}")).expect("json");
        p.delta.get_or_init(|| Some(Delta { base, patch }));
        p
    };
    o.push_conflated(&keyed("a", 1), IV, false, t0);
    assert_eq!(sent(&o), ["a1"]);
    o.push_conflated(&with_delta(2, 1), IV, true, t0 + IV / 2);
    o.release_due(t0 + IV);
    assert_eq!(sent(&o), ["a2d"], "it was sent 1");
    o.push_conflated(&with_delta(3, 2), IV, true, t0 + IV);
    o.push_conflated(&with_delta(4, 3), IV, true, t0 + IV);
    o.release_due(t0 + IV * 2);
    assert_eq!(sent(&o), ["a4*"], "replaced: the full value");
    o.push_conflated(&with_delta(5, 4), IV, true, t0 + IV * 2);
    o.release_due(t0 + IV * 3);
    assert_eq!(sent(&o), ["a5d"], "it was sent 4");
    o.push_conflated(&with_delta(6, 5), IV, false, t0 + IV * 3);
    o.release_due(t0 + IV * 4);
    assert_eq!(sent(&o), ["a6"], "subscribed after its base went out");
    // A key quiet for a whole interval is forgotten, with what it was sent.
    o.release_due(t0 + IV * 6);
    o.push_conflated(&with_delta(7, 6), IV, true, t0 + IV * 6);
    assert_eq!(sent(&o), ["a7"]);
}
