//! One test on every broker: the memory broker (one node), a redis-server, and a
//! 3-master Redis Cluster, each started for the test and stopped with it.
//! `every_broker!` turns `async fn case(b: Backend)` functions into three tests each.

use switchyard::config::BrokerKind;
use switchyard::Config;

use crate::redis::{RedisCluster, RedisServer};
use crate::{config_toml, TestNode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    Cluster,
}

/// Nodes on one broker, with the Redis they share.
pub struct Deployment {
    pub nodes: Vec<TestNode>,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
}

impl Deployment {
    pub fn node(&self) -> &TestNode {
        &self.nodes[0]
    }

    /// redis-cli against the broker (following cluster redirections); `None` on the
    /// memory broker.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        match (&self.redis, &self.cluster) {
            (Some(r), _) => Some(r.cli(args)),
            (_, Some(c)) => Some(c.cli(args)),
            _ => None,
        }
    }
}

impl Backend {
    /// `count` nodes (the memory broker has one) with the TOML `tables` added.
    pub async fn start(self, count: usize, tables: &str) -> Deployment {
        let (redis, cluster) = match self {
            Backend::Memory => (None, None),
            Backend::Redis => (Some(tokio::task::block_in_place(RedisServer::start)), None),
            Backend::Cluster => (None, Some(tokio::task::block_in_place(RedisCluster::start))),
        };
        let count = if self == Backend::Memory { 1 } else { count };
        let mut nodes = Vec::new();
        for i in 0..count {
            let text = format!("{}\n{tables}", config_toml(&format!("node_id = \"n{i}\"")));
            let mut c = Config::from_toml(&text)
                .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
            if let Some(r) = &redis {
                c.broker = BrokerKind::Redis;
                c.redis.url = r.url();
            }
            if let Some(cl) = &cluster {
                c.broker = BrokerKind::Redis;
                c.redis.url = cl.url();
                c.redis.cluster = true;
            }
            nodes.push(TestNode::start_config_with(c).await);
        }
        Deployment {
            nodes,
            redis,
            cluster,
        }
    }
}

/// Three tests per case: `memory`, `redis` and `cluster` modules.
#[macro_export]
macro_rules! every_broker {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case($crate::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case($crate::Backend::Redis).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $case() { super::$case($crate::Backend::Cluster).await })*
        }
    };
}
