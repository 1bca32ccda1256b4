//! The replica without sockets: applying changes, tombstones and their bound, and the
//! snapshots cut from it.

use super::*;
use crate::channel::ChannelName;
use crate::protocol::raw_null;
use serde_json::Value;

fn change(key: &str, offset: u64, n: Option<u64>) -> Arc<Publication> {
    let ch = ChannelName::parse("stock:p").expect("valid");
    let payload = match n {
        Some(n) => RawValue::from_string(format!("{{\"n\":{n}}}")).expect("json"),
        None => raw_null(),
    };
    let mut p = Publication::new(ch, "level".into(), payload);
    p.key = Some(key.into());
    p.offset = Some(offset);
    p.deleted = n.is_none();
    Arc::new(p)
}

fn seeded(entries: Vec<Arc<Publication>>, offset: u64) -> Replica {
    Replica::seed(
        &StateSnapshot {
            epoch: "e".into(),
            offset,
            floor: 0,
            partial: false,
            entries,
        },
        10,
    )
}

/// (key, offset, deleted) of each entry of encoded entries.
fn listed(entries: &RawValue) -> Vec<(String, u64, bool)> {
    let v: Vec<Value> = serde_json::from_str(entries.get()).expect("entries");
    v.iter()
        .map(|e| {
            (
                e["key"].as_str().expect("key").to_owned(),
                e["offset"].as_u64().expect("offset"),
                e["deleted"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[test]
fn changes_replace_the_key_and_return_its_previous_live_version() {
    let mut r = seeded(vec![change("a", 1, Some(1)), change("b", 2, Some(2))], 2);
    assert_eq!(r.len(), 2);
    let prev = r.apply(&change("a", 3, Some(3))).expect("a had a version");
    assert_eq!(prev.offset, Some(1));
    assert!(
        r.apply(&change("b", 4, None)).is_some(),
        "a deletion has a base too"
    );
    assert_eq!(r.len(), 1);
    assert!(
        r.apply(&change("b", 5, Some(5))).is_none(),
        "a tombstone is no base"
    );
    assert!(
        r.apply(&change("a", 2, Some(9))).is_none(),
        "older than held: ignored"
    );
    assert_eq!(r.offset, 5);
    assert_eq!(
        listed(&r.full(None)),
        [("a".into(), 3, false), ("b".into(), 5, false)]
    );
}

#[test]
fn partial_snapshots_hold_the_changes_after_since_tombstones_included() {
    let mut r = seeded(vec![change("a", 1, Some(1)), change("b", 2, Some(2))], 2);
    r.apply(&change("c", 3, Some(3)));
    r.apply(&change("a", 4, None));
    assert!(
        !r.reaches(1),
        "the seed brought no tombstones from before it"
    );
    assert!(r.reaches(2) && r.reaches(4) && !r.reaches(5));
    assert_eq!(
        listed(&r.since(2, None)),
        [("c".into(), 3, false), ("a".into(), 4, true)]
    );
    assert_eq!(
        listed(&r.since(2, Some(&["a".to_owned()]))),
        [("a".into(), 4, true)]
    );
    assert_eq!(
        listed(&r.full(Some(&["b".to_owned(), "zz".to_owned()]))),
        [("b".into(), 2, false)]
    );
}

#[test]
fn a_broker_read_reaching_further_back_is_merged_with_the_newer_changes_here() {
    let mut r = seeded(vec![change("a", 5, Some(5))], 6);
    r.apply(&change("b", 7, Some(7)));
    // The broker's changes after 1 as of offset 6, and one (8) not yet delivered here.
    let read = StateSnapshot {
        epoch: "e".into(),
        offset: 8,
        floor: 0,
        partial: true,
        entries: vec![
            change("z", 2, None),
            change("a", 5, Some(5)),
            change("c", 8, Some(8)),
        ],
    };
    assert_eq!(
        listed(&r.since_with(&read, None)),
        [
            ("z".into(), 2, true),
            ("a".into(), 5, false),
            ("b".into(), 7, false)
        ],
        "8 arrives live: the subscriber starts at this replica's offset"
    );
}

#[test]
fn tombstones_are_bounded_and_the_floor_rises_past_the_ones_forgotten() {
    let mut r = seeded(vec![], 0);
    let mut offset = 0;
    for i in 0..(MIN_TOMBSTONES + 5) {
        offset += 1;
        r.apply(&change(&format!("k{i}"), offset, Some(1)));
        offset += 1;
        r.apply(&change(&format!("k{i}"), offset, None));
    }
    assert_eq!(r.tombstones, MIN_TOMBSTONES);
    assert!(r.floor() >= 10, "floor {}", r.floor());
    assert!(!r.reaches(1));
}

#[test]
fn the_full_snapshot_is_encoded_once_per_offset() {
    let mut r = seeded(vec![change("a", 1, Some(1))], 1);
    let first = r.full(None);
    assert!(
        Arc::ptr_eq(&first, &r.full(None)),
        "reused while nothing changed"
    );
    r.apply(&change("b", 2, Some(2)));
    assert_eq!(listed(&r.full(None)).len(), 2);
}
