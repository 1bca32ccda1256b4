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

impl Deployment {
    /// The events stream (`<prefix>:events`, SPEC 17), oldest first, each entry's
    /// fields; `None` on the memory broker.
    pub async fn events(&self) -> Option<Vec<std::collections::HashMap<String, String>>> {
        let mut cmd = ::redis::cmd("XRANGE");
        cmd.arg("switchyard:events").arg("-").arg("+");
        let reply: ::redis::Value = match (&self.redis, &self.cluster) {
            (Some(r), _) => {
                let client = ::redis::Client::open(r.url()).expect("redis url");
                let mut c = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect");
                cmd.query_async(&mut c).await.expect("XRANGE")
            }
            (_, Some(cl)) => {
                let client = ::redis::cluster::ClusterClient::new(vec![cl.url()]).expect("cluster");
                let mut c = client.get_async_connection().await.expect("connect");
                cmd.query_async(&mut c).await.expect("XRANGE")
            }
            _ => return None,
        };
        Some(stream_entries(reply))
    }
}

/// The fields of each entry of an XRANGE reply.
fn stream_entries(reply: ::redis::Value) -> Vec<std::collections::HashMap<String, String>> {
    use ::redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| match e {
            Value::Array(parts) => match parts.get(1) {
                Some(Value::Array(kv)) => Some(
                    kv.chunks(2)
                        .filter_map(|p| Some((text(p.first()?), text(p.get(1)?))))
                        .collect(),
                ),
                _ => None,
            },
            _ => None,
        })
        .collect()
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
