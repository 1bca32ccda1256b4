//! State channels (SPEC 16.1–16.2): keys, offsets, tombstones, limits, expiry and
//! snapshots, full and partial.

use super::*;

const STATE: StateOpts = StateOpts {
    max_keys: 10_000,
    ttl: Duration::ZERO,
};

fn keyed(channel: &str, key: &str, n: u64) -> Publication {
    let mut p = publication(channel, n);
    p.key = Some(key.into());
    p
}

fn deleted(channel: &str, key: &str) -> Publication {
    let mut p = Publication::new(ch(channel), "e".into(), switchyard::protocol::raw_null());
    p.key = Some(key.into());
    p.deleted = true;
    p
}

fn with(state: StateOpts) -> PublishOpts {
    PublishOpts {
        state: Some(state),
        ..PublishOpts::default()
    }
}

fn keys_of(s: &switchyard::broker::StateSnapshot) -> Vec<(String, u64, bool)> {
    s.entries
        .iter()
        .map(|p| {
            (
                p.key.as_deref().unwrap_or("").to_owned(),
                p.offset.unwrap_or(0),
                p.deleted,
            )
        })
        .collect()
}

pub(crate) async fn state_keeps_the_newest_of_each_key(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    let c = ch("st:a");
    b.subscribe(&c, &state_sub()).await.expect("subscribe");
    for (k, n) in [("a", 1), ("b", 2), ("c", 3), ("a", 4)] {
        let r = b
            .publish(keyed("st:a", k, n), &with(STATE))
            .await
            .expect("set");
        assert_eq!(
            r.offset,
            Some(n),
            "{kind:?}: every change gets the next offset"
        );
    }
    let r = b
        .publish(deleted("st:a", "b"), &with(STATE))
        .await
        .expect("delete");
    assert_eq!(r.offset, Some(5));
    let full = b.state(&c, STATE, None, None).await.expect("state");
    assert!(!full.partial);
    assert_eq!(full.offset, 5);
    assert_eq!(
        keys_of(&full),
        [("c".into(), 3, false), ("a".into(), 4, false)],
        "{kind:?}: live keys, ascending, no tombstone in a full snapshot"
    );
    assert_eq!(full.entries[1].payload.get(), "{\"n\":4}");
    let partial = b.state(&c, STATE, Some(3), None).await.expect("state");
    assert!(partial.partial);
    assert_eq!(
        keys_of(&partial),
        [("a".into(), 4, false), ("b".into(), 5, true)],
        "{kind:?}: the changes after 3, the tombstone included"
    );
    let narrowed = b
        .state(&c, STATE, None, Some(&["a".to_owned(), "zz".to_owned()]))
        .await
        .expect("state");
    assert_eq!(keys_of(&narrowed), [("a".into(), 4, false)]);
    let rolled = b.state(&c, STATE, Some(9), None).await.expect("state");
    assert!(
        !rolled.partial,
        "{kind:?}: an offset above the newest gets everything"
    );
    // Every change was delivered, with its key; the deletion without a payload.
    let got = eventually("five changes delivered", || {
        let got = f.sink.on("st:a");
        async move { (got.len() == 5).then_some(got) }
    })
    .await;
    assert_eq!(got[4].key.as_deref(), Some("b"));
    assert!(got[4].deleted);
    assert_eq!(got[4].offset, Some(5));
}

fn state_sub() -> SubscribeOpts {
    SubscribeOpts {
        history: Some(HistoryOpts {
            size: 0,
            ttl: Duration::ZERO,
        }),
        channel_events: false,
    }
}

pub(crate) async fn state_needs_a_key_and_respects_max_keys(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    let e = b
        .publish(publication("st:k", 1), &with(STATE))
        .await
        .expect_err("no key");
    assert!(matches!(e, BrokerError::Refused(_)), "{kind:?}: {e:?}");
    let two = StateOpts {
        max_keys: 2,
        ttl: Duration::ZERO,
    };
    b.publish(keyed("st:k", "a", 1), &with(two))
        .await
        .expect("a");
    b.publish(keyed("st:k", "b", 2), &with(two))
        .await
        .expect("b");
    let e = b
        .publish(keyed("st:k", "c", 3), &with(two))
        .await
        .expect_err("a third key");
    assert!(matches!(e, BrokerError::Limit(_)), "{kind:?}: {e:?}");
    b.publish(keyed("st:k", "a", 4), &with(two))
        .await
        .expect("an existing key changes");
    b.publish(deleted("st:k", "b"), &with(two))
        .await
        .expect("delete");
    b.publish(keyed("st:k", "c", 5), &with(two))
        .await
        .expect("room again");
}

pub(crate) async fn state_keys_expire_into_tombstones(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    let c = ch("st:t");
    b.subscribe(&c, &state_sub()).await.expect("subscribe");
    let short = StateOpts {
        max_keys: 100,
        ttl: Duration::from_secs(1),
    };
    b.publish(keyed("st:t", "gone", 1), &with(short))
        .await
        .expect("set");
    let after = eventually("the key to expire", || async {
        let s = b.state(&c, short, None, None).await.ok()?;
        s.entries.is_empty().then_some(s)
    })
    .await;
    assert_eq!(
        after.offset, 2,
        "{kind:?}: the expiry is a change of its own"
    );
    let partial = b.state(&c, short, Some(1), None).await.expect("state");
    assert_eq!(keys_of(&partial), [("gone".into(), 2, true)]);
    let got = eventually("the expiry delivered", || {
        let got = f.sink.on("st:t");
        async move { (got.len() == 2).then_some(got) }
    })
    .await;
    assert!(got[1].deleted && got[1].key.as_deref() == Some("gone"));
    // The tombstone goes after the TTL too: older offsets then get a full snapshot.
    let s = eventually("the tombstone to go", || async {
        let s = b.state(&c, short, Some(1), None).await.ok()?;
        (!s.partial).then_some(s)
    })
    .await;
    assert!(s.floor >= 2, "{kind:?}: floor {}", s.floor);
}
