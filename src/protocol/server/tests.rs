//! One golden JSON test per server frame (the timestamp aside, which is checked for
//! its form and then fixed), and the publication in each of its encodings.

use serde_json::{json, Value};

use super::super::*;
use crate::channel::ChannelName;
use crate::ids::ConnId;

fn golden(msg: ServerMessage<'_>, id: Option<&str>, expected: Value) {
    let bytes = msg.to_bytes(id);
    let mut v: Value = serde_json::from_slice(&bytes).expect("JSON");
    let ts = v["timestamp"].as_str().expect("timestamp").to_owned();
    assert!(
        ts.ends_with('Z') && ts.len() == 24,
        "RFC 3339 UTC millis: {ts}"
    );
    v["timestamp"] = json!("T");
    assert_eq!(v, expected, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(v["type"], msg.name());
    assert!(SERVER_TYPES.contains(&msg.name()));
}

#[test]
fn auth_success_and_auth_error() {
    golden(
        ServerMessage::AuthSuccess(AuthSuccess {
            user_id: Some("42"),
            session_id: None,
            conn_id: ConnId(255),
            node: "n1",
            channels: vec!["user:42"],
            anonymous: false,
            resume: None,
        }),
        Some("1"),
        json!({"type":"auth_success","id":"1","payload":{"user_id":"42","session_id":null,"conn_id":"00000000000000ff","node":"n1","channels":["user:42"]},"timestamp":"T"}),
    );
    golden(
        ServerMessage::AuthSuccess(AuthSuccess {
            user_id: None,
            session_id: Some("s"),
            conn_id: ConnId(1),
            node: "n1",
            channels: vec![],
            anonymous: true,
            resume: Some("r".into()),
        }),
        None,
        json!({"type":"auth_success","payload":{"user_id":null,"session_id":"s","conn_id":"0000000000000001","node":"n1","channels":[],"anonymous":true,"resume":"r"},"timestamp":"T"}),
    );
    golden(
        ServerMessage::AuthError {
            code: ErrorCode::Unauthorized,
            message: "token expired",
        },
        Some("a"),
        json!({"type":"auth_error","id":"a","payload":{"code":"unauthorized","message":"token expired"},"timestamp":"T"}),
    );
}

#[test]
fn subscribed_unsubscribed_error_pong_ack_disconnect() {
    let s = Subscribed {
        channel: "chat:1".into(),
        offset: Some(7),
        epoch: Some("e1".into()),
        recovered: Some(true),
        read_offset: Some(5),
        unread: Some(2),
    };
    golden(
        ServerMessage::Subscribed(&s),
        Some("s1"),
        json!({"type":"subscribed","id":"s1","payload":{"channel":"chat:1","offset":7,"epoch":"e1","recovered":true,"read_offset":5,"unread":2},"timestamp":"T"}),
    );
    let bare = Subscribed {
        channel: "public:a".into(),
        ..Subscribed::default()
    };
    golden(
        ServerMessage::Subscribed(&bare),
        None,
        json!({"type":"subscribed","payload":{"channel":"public:a"},"timestamp":"T"}),
    );
    golden(
        ServerMessage::Unsubscribed {
            channel: "public:a",
        },
        Some("u"),
        json!({"type":"unsubscribed","id":"u","payload":{"channel":"public:a"},"timestamp":"T"}),
    );
    golden(
        ServerMessage::Error {
            code: ErrorCode::Forbidden,
            message: "no",
        },
        Some("7"),
        json!({"type":"error","id":"7","payload":{"code":"forbidden","message":"no"},"timestamp":"T"}),
    );
    golden(
        ServerMessage::Pong,
        Some("p"),
        json!({"type":"pong","id":"p","payload":{},"timestamp":"T"}),
    );
    golden(
        ServerMessage::Ack { offset: Some(3) },
        Some("x"),
        json!({"type":"ack","id":"x","payload":{"offset":3},"timestamp":"T"}),
    );
    golden(
        ServerMessage::Ack { offset: None },
        Some("x"),
        json!({"type":"ack","id":"x","payload":{},"timestamp":"T"}),
    );
    golden(
        ServerMessage::Disconnect {
            code: CloseCode::SlowConsumer,
            reason: "slow_consumer",
        },
        Some("ignored"),
        json!({"type":"disconnect","payload":{"code":4010,"reason":"slow_consumer","reconnect":true},"timestamp":"T"}),
    );
}

#[test]
fn presence_and_history() {
    let p = Presence {
        channel: Some("chat:1".into()),
        count: 2,
        users: 1,
        clients: vec![PresenceClient {
            conn_id: "c".into(),
            user_id: Some("u".into()),
            session_id: None,
            info: None,
        }],
    };
    golden(
        ServerMessage::Presence(&p),
        Some("q"),
        json!({"type":"presence","id":"q","payload":{"channel":"chat:1","count":2,"users":1,"clients":[{"conn_id":"c","user_id":"u","session_id":null,"info":null}]},"timestamp":"T"}),
    );
    let mut publ = Publication::new(
        ChannelName::parse("chat:1").expect("valid"),
        "m".into(),
        serde_json::value::RawValue::from_string("1".into()).expect("raw"),
    );
    publ.offset = Some(1);
    publ.timestamp = "T0".into();
    let pubs = vec![std::sync::Arc::new(publ)];
    golden(
        ServerMessage::History(History {
            channel: "chat:1",
            publications: publications_json(&pubs),
            offset: 1,
            epoch: "e",
        }),
        Some("h"),
        json!({"type":"history","id":"h","payload":{"channel":"chat:1","publications":[{"type":"m","channel":"chat:1","payload":1,"timestamp":"T0","offset":1}],"offset":1,"epoch":"e"},"timestamp":"T"}),
    );
}

#[test]
fn read_unread_snapshot_state_presence_count() {
    let r = Read {
        channel: "user:1".into(),
        read_offset: 4,
        unread: 1,
    };
    golden(
        ServerMessage::Read(&r),
        None,
        json!({"type":"read","payload":{"channel":"user:1","read_offset":4,"unread":1},"timestamp":"T"}),
    );
    let u = Unread {
        channels: vec![UnreadChannel {
            channel: "chat:1".into(),
            offset: 9,
            read_offset: 4,
            unread: 5,
        }],
    };
    golden(
        ServerMessage::Unread(&u),
        Some("n"),
        json!({"type":"unread","id":"n","payload":{"channels":[{"channel":"chat:1","offset":9,"read_offset":4,"unread":5}]},"timestamp":"T"}),
    );
    let mut live = Publication::new(
        crate::channel::ChannelName::parse("stock:p1").expect("valid"),
        "stock".into(),
        serde_json::value::RawValue::from_string("{\"n\":3}".into()).expect("raw"),
    );
    live.key = Some("sku1".into());
    live.offset = Some(10);
    live.timestamp = "T1".into();
    let mut gone = Publication::new(
        crate::channel::ChannelName::parse("stock:p1").expect("valid"),
        "stock".into(),
        crate::protocol::raw_null(),
    );
    gone.key = Some("sku2".into());
    gone.offset = Some(12);
    gone.deleted = true;
    gone.timestamp = "T2".into();
    let snap = Snapshot {
        channel: "stock:p1".into(),
        offset: 12,
        epoch: "e".into(),
        full: Some(true),
        entries: state_entries_json([&live, &gone]).into(),
    };
    golden(
        ServerMessage::Snapshot(&snap),
        None,
        json!({"type":"snapshot","payload":{"channel":"stock:p1","offset":12,"epoch":"e","full":true,"entries":[
            {"key":"sku1","type":"stock","payload":{"n":3},"offset":10,"timestamp":"T1"},
            {"key":"sku2","deleted":true,"offset":12,"timestamp":"T2"}]},"timestamp":"T"}),
    );
    let state = Snapshot { full: None, ..snap };
    golden(
        ServerMessage::State(&state),
        Some("st"),
        json!({"type":"state","id":"st","payload":{"channel":"stock:p1","offset":12,"epoch":"e","entries":[
            {"key":"sku1","type":"stock","payload":{"n":3},"offset":10,"timestamp":"T1"},
            {"key":"sku2","deleted":true,"offset":12,"timestamp":"T2"}]},"timestamp":"T"}),
    );
    let pc = PresenceCount {
        channel: "stream:1".into(),
        count: 100_000,
        users: 99_000,
    };
    golden(
        ServerMessage::PresenceCount(&pc),
        None,
        json!({"type":"presence_count","payload":{"channel":"stream:1","count":100000,"users":99000},"timestamp":"T"}),
    );
}

fn publication(channel: &str) -> Publication {
    let mut p = Publication::new(
        ChannelName::parse(channel).expect("valid"),
        "order_update".into(),
        serde_json::value::RawValue::from_string(r#"{"status":"shipped"}"#.into()).expect("raw"),
    );
    p.timestamp = "2026-01-01T00:00:00.000Z".into();
    p
}

#[test]
fn publication_encodings() {
    let mut p = publication("order:1");
    p.offset = Some(3);
    p.epoch = Some("never-sent".into());
    assert_eq!(
        std::str::from_utf8(p.bytes()).expect("utf8"),
        r#"{"type":"order_update","channel":"order:1","payload":{"status":"shipped"},"timestamp":"2026-01-01T00:00:00.000Z","offset":3}"#
    );
    assert_eq!(
        std::str::from_utf8(p.conflated_bytes()).expect("utf8"),
        r#"{"type":"order_update","channel":"order:1","payload":{"status":"shipped"},"timestamp":"2026-01-01T00:00:00.000Z","offset":3,"conflated":true}"#
    );
    assert!(p.delta_bytes().is_none(), "no delta computed");
    let mut k = publication("stock:p1");
    k.key = Some("sku1".into());
    k.offset = Some(9);
    k.from = Some(ClientInfo {
        user_id: Some("u".into()),
        ..ClientInfo::default()
    });
    let _ = k.delta.set(Some(Delta {
        base: 7,
        patch: serde_json::value::RawValue::from_string(r#"{"n":2}"#.into()).expect("raw"),
    }));
    assert_eq!(
        std::str::from_utf8(k.delta_bytes().expect("delta")).expect("utf8"),
        r#"{"type":"order_update","channel":"stock:p1","key":"sku1","payload":{"n":2},"timestamp":"2026-01-01T00:00:00.000Z","offset":9,"from":{"user_id":"u"},"delta":true,"base":7}"#
    );
    let mut d = publication("stock:p1");
    d.key = Some("sku1".into());
    d.deleted = true;
    d.offset = Some(10);
    assert_eq!(
        std::str::from_utf8(d.bytes()).expect("utf8"),
        r#"{"type":"order_update","channel":"stock:p1","key":"sku1","timestamp":"2026-01-01T00:00:00.000Z","offset":10,"deleted":true}"#
    );
}

#[test]
fn reserved_names_cover_both_directions() {
    for t in SERVER_TYPES.iter().chain(CLIENT_TYPES) {
        assert!(is_reserved(t), "{t}");
    }
    assert!(!is_reserved("order_update"));
}
