//! ONE conformance suite for every broker (the centrifuge way): each case is written
//! once against the `Broker`, `Presence` and `Cluster` traits and run on the memory
//! broker, on a real redis-server and on a real 3-master Redis Cluster, each case
//! with its own server. What arrives for the node is recorded by a test `Sink`.
//! Every broker operation added for SPEC 15–17 gets its cases here first.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::value::RawValue;
use switchyard::broker::memory::MemoryBroker;
use switchyard::broker::redis::RedisBroker;
use switchyard::broker::{
    Brokers, Control, Delivery, HistoryOpts, PresenceEntry, PublishOpts, Sink, SubscribeOpts,
    Target,
};
use switchyard::channel::ChannelName;
use switchyard::config::{Config, EventKind};
use switchyard::ids::ConnId;
use switchyard::metrics::Metrics;
use switchyard::position::Position;
use switchyard::protocol::{ClientInfo, Publication};
use testkit::eventually;
use testkit::redis::{RedisCluster, RedisServer};

/// What the broker handed to this node.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<Arc<Publication>>>,
    controls: Mutex<Vec<Control>>,
    /// Connections this node holds (for the user registry's liveness check).
    conns: Mutex<HashSet<ConnId>>,
}

impl Sink for Recorder {
    fn deliver(&self, p: &Arc<Publication>) -> Delivery {
        self.delivered.lock().push(p.clone());
        Delivery::Delivered
    }
    fn execute(&self, c: &Control) {
        self.controls.lock().push(c.clone());
    }
    fn positions(&self) -> Vec<(ChannelName, Position)> {
        Vec::new()
    }
    fn position(&self, _ch: &ChannelName) -> Option<Position> {
        None
    }
    fn lose(&self, _ch: &ChannelName, _position: Position) {}
    fn has_connection(&self, id: ConnId) -> bool {
        self.conns.lock().contains(&id)
    }
}

impl Recorder {
    fn on(&self, ch: &str) -> Vec<Arc<Publication>> {
        self.delivered
            .lock()
            .iter()
            .filter(|p| p.channel.as_str() == ch)
            .cloned()
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Redis,
    Cluster,
}

enum Server {
    None,
    Redis(#[allow(dead_code)] RedisServer),
    Cluster(#[allow(dead_code)] RedisCluster),
}

/// One broker of `kind` on its own server, and what it delivered.
struct Fixture {
    b: Brokers,
    sink: Arc<Recorder>,
    config: Config,
    url: Option<String>,
    _server: Arc<Server>,
}

fn config(node: &str, extra: &str) -> Config {
    Config::from_toml(&format!(
        "node_id = \"{node}\"\nauth.jwt_secret = \"s\"\npresence_ttl = \"1s\"\n{extra}"
    ))
    .expect("config")
}

async fn fixture(kind: Kind) -> Fixture {
    let (server, url) = match kind {
        Kind::Memory => (Server::None, None),
        Kind::Redis => {
            let r = RedisServer::start();
            let url = r.url();
            (Server::Redis(r), Some(url))
        }
        Kind::Cluster => {
            let c = tokio::task::spawn_blocking(RedisCluster::start)
                .await
                .expect("cluster");
            let url = c.url();
            (Server::Cluster(c), Some(url))
        }
    };
    another(kind, Arc::new(server), url, "n1").await
}

/// A second broker (another node) on the same server.
async fn another(kind: Kind, server: Arc<Server>, url: Option<String>, node: &str) -> Fixture {
    let extra = match (&url, kind) {
        (Some(u), Kind::Cluster) => {
            format!("broker = \"redis\"\n[redis]\nurl = \"{u}\"\ncluster = true\n")
        }
        (Some(u), _) => format!("broker = \"redis\"\n[redis]\nurl = \"{u}\"\n"),
        (None, _) => String::new(),
    };
    let config = config(node, &extra);
    let sink = Arc::new(Recorder::default());
    let b = match kind {
        Kind::Memory => Brokers::of(MemoryBroker::new(&config, sink.clone())),
        Kind::Redis | Kind::Cluster => Brokers::of(
            RedisBroker::start(&config, sink.clone(), Arc::new(Metrics::new())).expect("broker"),
        ),
    };
    eventually("the broker to be up", || {
        let up = b.cluster.is_up();
        async move { up.then_some(()) }
    })
    .await;
    Fixture {
        b,
        sink,
        config,
        url,
        _server: server,
    }
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).expect("valid channel")
}

fn publication(channel: &str, n: u64) -> Publication {
    Publication::new(
        ch(channel),
        "e".into(),
        RawValue::from_string(format!("{{\"n\":{n}}}")).expect("raw"),
    )
}

const HISTORY: HistoryOpts = HistoryOpts {
    size: 100,
    ttl: Duration::from_secs(3600),
};

fn stored() -> PublishOpts {
    PublishOpts::history(Some(HISTORY))
}

fn numbered() -> SubscribeOpts {
    SubscribeOpts {
        history: Some(HISTORY),
        channel_events: true,
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Kind::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Kind::Redis).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case(super::Kind::Cluster).await })*
        }
    };
}

conformance!(
    offsets_and_epochs_including_an_empty_channel,
    size_and_ttl_trimming,
    since_and_limit,
    volatile_and_targeted_publications_are_never_stored,
    per_channel_order,
    presence_add_remove_and_expiry,
    control_commands_reach_the_sink,
    the_per_user_registry,
    rollback_is_visible_in_the_page,
    idempotent_publishing,
    occupancy_and_user_transitions_are_events,
);

async fn offsets_and_epochs_including_an_empty_channel(kind: Kind) {
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

async fn size_and_ttl_trimming(kind: Kind) {
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

async fn since_and_limit(kind: Kind) {
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

async fn volatile_and_targeted_publications_are_never_stored(kind: Kind) {
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

async fn per_channel_order(kind: Kind) {
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

fn entry(conn: &str, user: &str) -> PresenceEntry {
    PresenceEntry {
        conn_id: conn.into(),
        client: ClientInfo {
            user_id: Some(user.into()),
            ..ClientInfo::default()
        },
    }
}

async fn presence_add_remove_and_expiry(kind: Kind) {
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

async fn control_commands_reach_the_sink(kind: Kind) {
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

async fn the_per_user_registry(kind: Kind) {
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

async fn rollback_is_visible_in_the_page(kind: Kind) {
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

async fn idempotent_publishing(kind: Kind) {
    let f = fixture(kind).await;
    let b = &f.b.broker;
    b.subscribe(&ch("i:a"), &numbered())
        .await
        .expect("subscribe");
    let opts = PublishOpts {
        history: Some(HISTORY),
        idempotency: Some(("order-42-shipped".into(), Duration::from_secs(60))),
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

async fn occupancy_and_user_transitions_are_events(kind: Kind) {
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
