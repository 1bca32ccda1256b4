//! What spans the nodes: commands, the user registry, lifecycle events.

use super::*;

pub(crate) async fn control_commands_reach_the_sink(kind: Kind) {
    let f = fixture(kind).await;
    let cmd = Control::Disconnect {
        target: Target::User("u1".into()),
        code: 4003,
        reason: Some("banned".into()),
    };
    f.b.cluster.control(cmd.clone()).await.expect("control");
    let sub = Control::Subscribe {
        user_id: "u1".into(),
        channel: ch("public:promo"),
    };
    f.b.cluster.control(sub.clone()).await.expect("control");
    eventually("both commands executed", || {
        let got = f.sink.controls.lock().clone();
        let want = vec![cmd.clone(), sub.clone()];
        async move { (got == want).then_some(()) }
    })
    .await;
}

pub(crate) async fn the_per_user_registry(kind: Kind) {
    let f = fixture(kind).await;
    let c = &f.b.cluster;
    let (a, b) = (ConnId(1), ConnId(2));
    f.sink.conns.lock().extend([a, b]);
    assert_eq!(
        c.user_connected("u:7", a).await.expect("connect"),
        [a.to_string()]
    );
    assert_eq!(
        c.user_connected("u:7", b).await.expect("connect"),
        [a.to_string(), b.to_string()],
        "{kind:?}: registration order"
    );
    assert_eq!(
        c.user_connections("u:7").await.expect("list"),
        [a.to_string(), b.to_string()]
    );
    c.user_connected("s:x", ConnId(3)).await.expect("session");
    f.sink.conns.lock().insert(ConnId(3));
    assert_eq!(
        c.user_count().await.expect("count"),
        2,
        "distinct users and sessions"
    );
    c.user_disconnected("u:7", a).await.expect("disconnect");
    assert_eq!(
        c.user_connections("u:7").await.expect("list"),
        [b.to_string()]
    );
    c.user_disconnected("u:7", b).await.expect("disconnect");
    assert!(c.user_connections("u:7").await.expect("list").is_empty());
    assert_eq!(c.user_count().await.expect("count"), 1);
}

pub(crate) async fn occupancy_and_user_transitions_are_events(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b;
    let c = ch("ev:a");
    b.broker
        .subscribe(&c, &numbered())
        .await
        .expect("subscribe");
    b.broker
        .unsubscribe(&c, &numbered())
        .await
        .expect("unsubscribe");
    f.sink.conns.lock().insert(ConnId(5));
    b.cluster
        .user_connected("u:9", ConnId(5))
        .await
        .expect("connect");
    b.cluster
        .user_disconnected("u:9", ConnId(5))
        .await
        .expect("disconnect");
    let events = eventually("four events", || async {
        let e = b.cluster.read_events(None, 100).await.ok()?;
        (e.len() >= 4).then_some(e)
    })
    .await;
    let kinds: Vec<EventKind> = events.iter().map(|(_, e)| e.event).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Occupied,
            EventKind::Vacated,
            EventKind::UserOnline,
            EventKind::UserOffline
        ],
        "{kind:?}"
    );
    let (_, occupied) = &events[0];
    assert_eq!(occupied.channel.as_deref(), Some("ev:a"));
    assert_eq!(occupied.data["channel"], "ev:a");
    assert_eq!(occupied.node, f.config.node_id);
    let (_, online) = &events[2];
    assert_eq!(online.user_id.as_deref(), Some("9"));
    // Reading after an id gives what came after it.
    let rest = b
        .cluster
        .read_events(Some(&events[1].0), 100)
        .await
        .expect("read");
    assert_eq!(rest.len(), 2);
}
