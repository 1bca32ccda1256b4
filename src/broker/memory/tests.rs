//! The sweeper frees what expired.

use super::*;
use crate::broker::{Control, Delivery};
use crate::ids::ConnId;
use crate::position::Position;

struct Nowhere;

impl Sink for Nowhere {
    fn deliver(&self, _p: &Arc<Publication>) -> Delivery {
        Delivery::Delivered
    }
    fn execute(&self, _c: &Control) {}
    fn positions(&self) -> Vec<(ChannelName, Position)> {
        Vec::new()
    }
    fn position(&self, _ch: &ChannelName) -> Option<Position> {
        None
    }
    fn lose(&self, _ch: &ChannelName, _position: Position) {}
    fn has_connection(&self, _id: ConnId) -> bool {
        false
    }
}

/// SPEC 7: expired history is freed whether or not the channel is touched again,
/// and the channel itself once its epoch has outlived the publications by a day.
#[tokio::test]
async fn expired_history_of_untouched_channels_is_freed() {
    let config = Config::from_toml("auth.jwt_secret = 's'").expect("config");
    let b = MemoryBroker::new(&config, Arc::new(Nowhere), Default::default());
    let opts = HistoryOpts {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    for i in 0..100 {
        let ch = ChannelName::parse(&format!("feed:{i}")).expect("channel");
        let p = Publication::new(ch, "e".into(), crate::protocol::raw_null());
        b.publish(p, &PublishOpts::history(Some(opts)))
            .await
            .expect("publish");
    }
    let now = Instant::now();
    assert_eq!(b.sweep_now(now), 100);
    let later = now + Duration::from_secs(61);
    assert_eq!(b.sweep_now(later), 100, "epochs and offsets stay a day");
    let items: usize = b
        .shards
        .iter()
        .map(|s| {
            s.lock()
                .channels
                .values()
                .filter_map(|c| c.history.as_ref())
                .map(|h| h.items.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(items, 0, "the publications themselves are gone");
    let much_later = now + Duration::from_secs(61) + META_GRACE;
    assert_eq!(b.sweep_now(much_later), 0, "and then the channels");
}
