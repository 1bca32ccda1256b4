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
