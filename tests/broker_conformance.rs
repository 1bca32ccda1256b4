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
    BrokerError, Brokers, Control, Delivery, HistoryOpts, PresenceEntry, PublishOpts, Sink,
    StateOpts, SubscribeOpts, Target,
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
        Kind::Memory => Brokers::of(MemoryBroker::new(&config, sink.clone(), Default::default())),
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

#[path = "broker_conformance/cluster.rs"]
mod cluster_cases;
#[path = "broker_conformance/delivery.rs"]
mod delivery_cases;
#[path = "broker_conformance/notify.rs"]
mod notify_cases;
#[path = "broker_conformance/presence.rs"]
mod presence_cases;
#[path = "broker_conformance/state.rs"]
mod state_cases;

use cluster_cases::*;
use delivery_cases::*;
use notify_cases::*;
use presence_cases::*;
use state_cases::*;

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
    counting_presence_sums_the_nodes,
    control_commands_reach_the_sink,
    the_per_user_registry,
    rollback_is_visible_in_the_page,
    idempotent_publishing,
    occupancy_and_user_transitions_are_events,
    state_keeps_the_newest_of_each_key,
    state_needs_a_key_and_respects_max_keys,
    state_keys_expire_into_tombstones,
    read_positions_move_forward_only_and_expire,
    receipts_count_once_per_user,
    fallbacks_fire_once_unless_confirmed,
);
