//! Notification state (SPEC 15): read positions, receipts once per user, fallbacks
//! that fire exactly once unless confirmed, and the events each appends (17).

use super::*;
use switchyard::broker::notify::{Fallback, Receipts};
use switchyard::config::EventKind;
use switchyard::ids::ConnId;

const TTL: Duration = Duration::from_secs(3600);

/// Events of `kind` appended so far.
async fn events_of(f: &Fixture, kind: EventKind) -> Vec<switchyard::events::Event> {
    f.b.cluster
        .read_events(None, 10_000)
        .await
        .expect("events")
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.event == kind)
        .collect()
}

pub(crate) async fn read_positions_move_forward_only_and_expire(kind: Kind) {
    let f = fixture(kind).await;
    let n = &f.b.notify;
    let (a, other) = (ch("inbox:a"), ch("inbox:b"));
    let r = n
        .mark_read("u:1", &a, 5, TTL, ConnId(7))
        .await
        .expect("mark");
    assert_eq!((r.position, r.moved), (5, true), "{kind:?}");
    let r = n
        .mark_read("u:1", &a, 3, TTL, ConnId(7))
        .await
        .expect("mark");
    assert_eq!(
        (r.position, r.moved),
        (5, false),
        "{kind:?}: backwards is a no-op"
    );
    assert_eq!(
        n.read_positions("u:1", &[a.clone(), other.clone()])
            .await
            .expect("read"),
        [5, 0]
    );
    assert_eq!(
        n.read_positions("u:2", std::slice::from_ref(&a))
            .await
            .expect("read"),
        [0],
        "per user"
    );
    n.mark_read("u:1", &other, 2, TTL, ConnId(7))
        .await
        .expect("mark");
    assert_eq!(
        n.read_channels("u:1", 1000).await.expect("all"),
        [(a.clone(), 5), (other.clone(), 2)]
    );
    assert_eq!(
        n.read_channels("u:1", 1).await.expect("all").len(),
        1,
        "limited"
    );
    let reads = events_of(&f, EventKind::Read).await;
    assert_eq!(
        reads.len(),
        2,
        "{kind:?}: one event per move, none for the no-op"
    );
    assert_eq!(reads[0].channel.as_deref(), Some("inbox:a"));
    assert_eq!(reads[0].user_id.as_deref(), Some("1"));
    assert_eq!(reads[0].data["read_offset"], 5);
    // A position is kept read_state_ttl after its last change.
    n.mark_read("s:x", &a, 1, Duration::from_secs(1), ConnId(8))
        .await
        .expect("mark");
    eventually("a position to expire", || async {
        let p = n
            .read_positions("s:x", std::slice::from_ref(&a))
            .await
            .ok()?;
        (p == [0]).then_some(())
    })
    .await;
}

pub(crate) async fn receipts_count_once_per_user(kind: Kind) {
    let f = fixture(kind).await;
    let n = &f.b.notify;
    let c = ch("inbox:r");
    let receipt = |who: &'static str, offsets: &'static [u64], conn: u64| Receipts {
        who,
        channel: &c,
        offsets,
        conn: ConnId(conn),
        floor: 0,
        keep: TTL,
    };
    let r = n
        .received(receipt("u:a", &[1, 2], 1))
        .await
        .expect("received");
    assert_eq!(r.new, [1, 2], "{kind:?}");
    let r = n
        .received(receipt("u:a", &[2, 3], 2))
        .await
        .expect("received");
    assert_eq!(r.new, [3], "{kind:?}: another device of the same user");
    let r = n.received(receipt("u:b", &[1], 3)).await.expect("received");
    assert_eq!(r.new, [1], "another user");
    let got = events_of(&f, EventKind::Received).await;
    let seen: Vec<(Option<String>, u64)> = got
        .iter()
        .map(|e| (e.user_id.clone(), e.data["offset"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("a".into()), 1),
            (Some("a".into()), 2),
            (Some("a".into()), 3),
            (Some("b".into()), 1)
        ],
        "{kind:?}"
    );
    assert_eq!(got[2].conn_id, Some(ConnId(2).to_string()));
}

pub(crate) async fn fallbacks_fire_once_unless_confirmed(kind: Kind) {
    let f = fixture(kind).await;
    let second = match f.url.clone() {
        Some(url) => Some(another(kind, f._server.clone(), Some(url), "n2").await),
        None => None,
    };
    let n = &f.b.notify;
    let c = ch("user:9");
    let fallback = |offset: u64| {
        Fallback {
        channel: c.clone(),
        offset,
        who: "u:9".into(),
        after: Duration::from_secs(1),
        data: RawValue::from_string(format!(
            r#"{{"channel":"user:9","offset":{offset},"user_id":"9","type":"t","payload":{{}},"data":{{"push":true}}}}"#
        ))
        .expect("json"),
    }
    };
    for o in 1..=4 {
        n.schedule_fallback(fallback(o)).await.expect("schedule");
    }
    n.schedule_fallback(fallback(4))
        .await
        .expect("scheduling again is a no-op");
    // 1 is confirmed by a receipt, 2 by a read position covering it.
    let r = n
        .received(Receipts {
            who: "u:9",
            channel: &c,
            offsets: &[1],
            conn: ConnId(1),
            floor: 0,
            keep: TTL,
        })
        .await
        .expect("received");
    assert_eq!(r.confirmed, 1, "{kind:?}");
    let m = n
        .mark_read("u:9", &c, 2, TTL, ConnId(1))
        .await
        .expect("read");
    assert_eq!(m.confirmed, 1, "{kind:?}");
    n.schedule_fallback(fallback(1))
        .await
        .expect("a confirmed publication is not scheduled again");
    // Every node fires what is due, over and over: each fallback fires once.
    let fired = eventually("3 and 4 to fire", || async {
        let mut all = 0;
        for b in std::iter::once(&f.b).chain(second.as_ref().map(|s| &s.b)) {
            all += b.notify.fire_fallbacks(100).await.ok()?;
        }
        let got = events_of(&f, EventKind::Undelivered).await;
        (got.len() >= 2).then_some((all, got))
    })
    .await;
    for _ in 0..3 {
        for b in std::iter::once(&f.b).chain(second.as_ref().map(|s| &s.b)) {
            b.notify.fire_fallbacks(100).await.expect("fire");
        }
    }
    let got = events_of(&f, EventKind::Undelivered).await;
    let offsets: Vec<u64> = got
        .iter()
        .map(|e| e.data["offset"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        offsets,
        [3, 4],
        "{kind:?}: exactly once each, none for the confirmed"
    );
    assert_eq!(got[0].user_id.as_deref(), Some("9"));
    assert_eq!(got[0].channel.as_deref(), Some("user:9"));
    assert_eq!(got[0].data["data"]["push"], true);
    assert!(fired.0 >= 1);
}
