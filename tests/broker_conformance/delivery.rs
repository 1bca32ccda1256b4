//! Publish, subscribe and history: offsets, epochs, trimming, order, idempotency.

use super::*;

pub(crate) async fn offsets_and_epochs_including_an_empty_channel(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    // Never subscribed, never published: reading creates nothing.
    let page = b
        .history(&ch("h:fresh"), HISTORY, None, None)
        .await
        .expect("history");
    assert_eq!((page.epoch.as_str(), page.offset), ("", 0), "{kind:?}");
    // The first subscriber gives a numbered channel its epoch: its first publication
    // carries the same one.
    b.subscribe(&ch("h:a"), &numbered())
        .await
        .expect("subscribe");
    let before = b
        .history(&ch("h:a"), HISTORY, None, None)
        .await
        .expect("history");
    assert!(!before.epoch.is_empty(), "{kind:?}: epoch at subscribe");
    assert_eq!(before.offset, 0);
    for n in 1..=3 {
        let r = b
            .publish(publication("h:a", n), &stored())
            .await
            .expect("publish");
        assert_eq!(r.offset, Some(n));
        assert_eq!(r.epoch.as_deref(), Some(before.epoch.as_str()));
    }
    let page = b
        .history(&ch("h:a"), HISTORY, None, None)
        .await
        .expect("history");
    assert_eq!(page.offset, 3);
    assert_eq!(page.epoch, before.epoch);
    let offsets: Vec<u64> = page.publications.iter().filter_map(|p| p.offset).collect();
    assert_eq!(offsets, [1, 2, 3]);
    eventually("the three delivered", || {
        let n = f.sink.on("h:a").len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    // Subscribed and left with nothing published: nothing outlives the subscribers.
    b.subscribe(&ch("h:b"), &numbered())
        .await
        .expect("subscribe");
    b.unsubscribe(&ch("h:b"), &numbered())
        .await
        .expect("unsubscribe");
    let page = b
        .history(&ch("h:b"), HISTORY, None, None)
        .await
        .expect("history");
    assert_eq!((page.epoch.as_str(), page.offset), ("", 0), "{kind:?}");
    // With publications, the epoch stays after the subscribers left.
    b.unsubscribe(&ch("h:a"), &numbered())
        .await
        .expect("unsubscribe");
    let page = b
        .history(&ch("h:a"), HISTORY, None, None)
        .await
        .expect("history");
    assert_eq!(page.epoch, before.epoch);
    assert_eq!(page.offset, 3);
}

pub(crate) async fn size_and_ttl_trimming(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    let small = HistoryOpts {
        size: 3,
        ttl: Duration::from_secs(3600),
    };
    for n in 1..=5 {
        b.publish(publication("t:size", n), &PublishOpts::history(Some(small)))
            .await
            .expect("publish");
    }
    let page = b
        .history(&ch("t:size"), small, None, None)
        .await
        .expect("history");
    let offsets: Vec<u64> = page.publications.iter().filter_map(|p| p.offset).collect();
    assert_eq!(offsets, [3, 4, 5], "{kind:?}: the newest `size` kept");
    assert_eq!(page.offset, 5);
    let short = HistoryOpts {
        size: 10,
        ttl: Duration::from_secs(1),
    };
    b.publish(publication("t:ttl", 1), &PublishOpts::history(Some(short)))
        .await
        .expect("publish");
    let kept = eventually("the publication to expire by TTL", || async {
        let page = b.history(&ch("t:ttl"), short, None, None).await.ok()?;
        page.publications.is_empty().then_some(page)
    })
    .await;
    assert_eq!(
        kept.offset, 1,
        "{kind:?}: offsets and epoch outlive the TTL"
    );
    assert!(!kept.epoch.is_empty());
}

pub(crate) async fn since_and_limit(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    for n in 1..=10 {
        b.publish(publication("s:a", n), &stored())
            .await
            .expect("publish");
    }
    let offsets = |since: Option<u64>, limit: Option<usize>| {
        let b = b.clone();
        async move {
            let page = b
                .history(&ch("s:a"), HISTORY, since, limit)
                .await
                .expect("history");
            page.publications
                .iter()
                .filter_map(|p| p.offset)
                .collect::<Vec<u64>>()
        }
    };
    assert_eq!(offsets(Some(7), None).await, [8, 9, 10], "{kind:?}");
    assert_eq!(offsets(None, Some(2)).await, [9, 10]);
    assert_eq!(offsets(Some(10), None).await, Vec::<u64>::new());
    assert_eq!(offsets(Some(0), None).await.len(), 10);
    assert_eq!(
        offsets(Some(5), Some(2)).await,
        [9, 10],
        "the newest of those after since"
    );
}

pub(crate) async fn volatile_and_targeted_publications_are_never_stored(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    b.subscribe(&ch("v:a"), &numbered())
        .await
        .expect("subscribe");
    let mut v = publication("v:a", 1);
    v.volatile = true;
    let mut t = publication("v:a", 2);
    t.to = Some("u1".into());
    for p in [v, t] {
        let r = b.publish(p, &stored()).await.expect("publish");
        assert_eq!(r.offset, None, "{kind:?}");
    }
    let page = b
        .history(&ch("v:a"), HISTORY, None, None)
        .await
        .expect("history");
    assert!(page.publications.is_empty() && page.offset == 0);
    let got = eventually("both delivered", || {
        let got = f.sink.on("v:a");
        async move { (got.len() == 2).then_some(got) }
    })
    .await;
    assert!(got[0].volatile && got[0].offset.is_none());
    assert_eq!(got[1].to.as_deref(), Some("u1"));
}

pub(crate) async fn per_channel_order(kind: Kind) {
    let f = fixture(kind).await;
    let b = f.b.broker.clone();
    for c in ["o:a", "o:b"] {
        b.subscribe(&ch(c), &SubscribeOpts::default())
            .await
            .expect("subscribe");
    }
    let tasks: Vec<_> = ["o:a", "o:b"]
        .into_iter()
        .map(|c| {
            let b = b.clone();
            tokio::spawn(async move {
                for n in 0..200 {
                    b.publish(publication(c, n), &PublishOpts::default())
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher");
    }
    for c in ["o:a", "o:b"] {
        let got = eventually("every publication delivered", || {
            let got = f.sink.on(c);
            async move { (got.len() == 200).then_some(got) }
        })
        .await;
        let ns: Vec<String> = got.iter().map(|p| p.payload.get().to_owned()).collect();
        let expected: Vec<String> = (0..200).map(|n| format!("{{\"n\":{n}}}")).collect();
        assert_eq!(ns, expected, "{kind:?}: {c} in publish order");
    }
}

pub(crate) async fn rollback_is_visible_in_the_page(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    for n in 1..=3 {
        b.publish(publication("r:a", n), &stored())
            .await
            .expect("publish");
    }
    let page = b
        .history(&ch("r:a"), HISTORY, None, None)
        .await
        .expect("history");
    // Every stored publication carries an entry id, distinct per offset: what tells a
    // reused offset from a duplicate.
    let ids: HashSet<&str> = page
        .publications
        .iter()
        .filter_map(|p| p.entry_id.as_deref())
        .collect();
    assert_eq!(ids.len(), 3, "{kind:?}");
    // A client that saw beyond the newest offset: the page shows the rollback.
    let page = b
        .history(&ch("r:a"), HISTORY, Some(9), None)
        .await
        .expect("history");
    assert!(page.offset < 9 && page.publications.is_empty());
    assert!(!switchyard::position::recoverable(9, &page.epoch, &page));
}

pub(crate) async fn idempotent_publishing(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    b.subscribe(&ch("i:a"), &numbered())
        .await
        .expect("subscribe");
    let opts = PublishOpts {
        history: Some(HISTORY),
        idempotency: Some(("order-42-shipped".into(), Duration::from_secs(60))),
        ..PublishOpts::default()
    };
    let first = b
        .publish(publication("i:a", 1), &opts)
        .await
        .expect("publish");
    let again = b
        .publish(publication("i:a", 2), &opts)
        .await
        .expect("publish");
    assert!(!first.duplicate && again.duplicate, "{kind:?}");
    assert_eq!(first.offset, again.offset);
    assert_eq!(first.epoch, again.epoch);
    let page = b
        .history(&ch("i:a"), HISTORY, None, None)
        .await
        .expect("history");
    assert_eq!(page.publications.len(), 1, "stored once");
    // Delivered once: a second delivery would have arrived by the time this does.
    b.publish(publication("i:a", 3), &stored())
        .await
        .expect("marker");
    let got = eventually("the marker delivered", || {
        let got = f.sink.on("i:a");
        async move { (got.len() >= 2).then_some(got) }
    })
    .await;
    let ns: Vec<&str> = got.iter().map(|p| p.payload.get()).collect();
    assert_eq!(ns, ["{\"n\":1}", "{\"n\":3}"], "delivered once");
    // Another key, or the same key on another channel, is another publication.
    let other = PublishOpts {
        idempotency: Some(("order-42-shipped".into(), Duration::from_secs(60))),
        ..stored()
    };
    let r = b
        .publish(publication("i:b", 1), &other)
        .await
        .expect("publish");
    assert!(!r.duplicate);
}
