//! Presence: counts, limits, removal, expiry of a gone node's entries.

use super::*;

fn entry(conn: &str, user: &str) -> PresenceEntry {
    PresenceEntry {
        conn_id: conn.into(),
        client: ClientInfo {
            user_id: Some(user.into()),
            ..ClientInfo::default()
        },
    }
}

pub(crate) async fn presence_add_remove_and_expiry(kind: Kind) {
    let f = fixture(kind).await;
    let p = &f.b.presence;
    let c = ch("p:a");
    for (conn, user) in [("c1", "u1"), ("c2", "u1"), ("c3", "u2")] {
        p.presence_add(&c, entry(conn, user)).await.expect("add");
    }
    let set = p.presence(&c, 1000).await.expect("presence");
    assert_eq!(
        (set.count, set.users, set.entries.len()),
        (3, 2, 3),
        "{kind:?}"
    );
    let limited = p.presence(&c, 2).await.expect("presence");
    assert_eq!(
        (limited.count, limited.entries.len()),
        (3, 2),
        "counts stay exact"
    );
    p.presence_remove(&c, "c1").await.expect("remove");
    let set = p.presence(&c, 1000).await.expect("presence");
    assert_eq!((set.count, set.users), (2, 2));
    p.presence_remove(&c, "c3").await.expect("remove");
    let set = p.presence(&c, 1000).await.expect("presence");
    assert_eq!((set.count, set.users), (1, 1));
    // A node that is gone: its entries vanish within presence_ttl (1 s here); the
    // memory broker's go with its process.
    let other = match f.url.clone() {
        Some(url) => {
            let gone = another(kind, f._server.clone(), Some(url.clone()), "gone").await;
            gone.b
                .presence
                .presence_add(&c, entry("g1", "u9"))
                .await
                .expect("add");
            let seen = p.presence(&c, 1000).await.expect("presence");
            assert_eq!(seen.count, 2, "{kind:?}: the other node's entry counts");
            drop(gone);
            Some(())
        }
        None => None,
    };
    if other.is_some() {
        eventually("a gone node's entry to expire", || async {
            let set = p.presence(&c, 1000).await.ok()?;
            (set.count == 1).then_some(())
        })
        .await;
    }
}

/// Counting presence (SPEC 16.5): per-node counts summed, distinct users within 2 %,
/// a bounded sample, and a gone node's viewers out within presence_ttl.
pub(crate) async fn counting_presence_sums_the_nodes(kind: Kind) {
    let f = fixture(kind).await;
    let p = &f.b.presence;
    let c = ch("stream:a");
    // 300 connections of 200 users on this node.
    for i in 0..300 {
        p.count_join(&c, entry(&format!("a{i}"), &format!("u{}", i % 200)));
    }
    let second = match f.url.clone() {
        Some(url) => {
            let b = another(kind, f._server.clone(), Some(url), "n2").await;
            // 200 more connections: 100 users also seen on the first node, 100 new.
            for i in 0..200 {
                b.b.presence
                    .count_join(&c, entry(&format!("b{i}"), &format!("u{}", 100 + i)));
            }
            Some(b)
        }
        None => None,
    };
    let (count, users) = if second.is_some() {
        (500, 300)
    } else {
        (300, 200)
    };
    let set = eventually("every node's report", || async {
        let set = p.counts(&c, 100).await.ok()?;
        (set.count == count).then_some(set)
    })
    .await;
    let err = (set.users as f64 - users as f64).abs() / users as f64;
    assert!(err < 0.02, "{kind:?}: users {} for {users}", set.users);
    assert!(
        !set.entries.is_empty() && set.entries.len() <= 100,
        "{kind:?}: a bounded sample"
    );
    assert!(p.counts(&c, 5).await.expect("counts").entries.len() <= 5);
    for i in 0..300 {
        p.count_leave(&c, &format!("a{i}"));
    }
    match second {
        Some(b) => {
            eventually("this node's viewers to leave the count", || async {
                let set = p.counts(&c, 100).await.ok()?;
                (set.count == 200).then_some(())
            })
            .await;
            drop(b);
            eventually(
                "a gone node's viewers to drop out within presence_ttl",
                || async {
                    let set = p.counts(&c, 100).await.ok()?;
                    (set.count == 0 && set.users == 0 && set.entries.is_empty()).then_some(())
                },
            )
            .await;
        }
        None => {
            let set = p.counts(&c, 100).await.expect("counts");
            assert_eq!((set.count, set.users, set.entries.len()), (0, 0, 0));
        }
    }
}
