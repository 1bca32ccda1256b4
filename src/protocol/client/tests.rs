//! Parsing of client frames: error codes for bad shapes, and one golden test per
//! frame.

use super::*;

fn code_of(text: &str) -> ErrorCode {
    parse_client_frame(text).expect_err("should fail").code
}

#[test]
fn bad_shapes_have_precise_codes() {
    assert_eq!(code_of("nope"), ErrorCode::InvalidMessage);
    assert_eq!(code_of("[1,2]"), ErrorCode::InvalidMessage);
    assert_eq!(code_of("{}"), ErrorCode::InvalidMessage);
    assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::InvalidMessage);
    assert_eq!(code_of(r#"{"type":"zzz"}"#), ErrorCode::UnknownType);
    assert_eq!(
        code_of(r#"{"type":"pong","channel":"a:b"}"#),
        ErrorCode::ReservedType
    );
    assert_eq!(
        code_of(r#"{"type":"subscribe","payload":{"channel":7}}"#),
        ErrorCode::InvalidPayload
    );
    assert_eq!(
        code_of(r#"{"type":"subscribe","payload":{}}"#),
        ErrorCode::InvalidPayload
    );
    // Offsets a JavaScript client cannot hold, or negative: refused, not wrapped.
    for bad in [
        r#"{"type":"subscribe","payload":{"channel":"a:b","since":{"offset":9007199254740992,"epoch":"e"}}}"#,
        r#"{"type":"subscribe","payload":{"channel":"a:b","since":{"offset":-1,"epoch":"e"}}}"#,
        r#"{"type":"history","payload":{"channel":"a:b","since":18446744073709551615}}"#,
        r#"{"type":"history","payload":{"channel":"a:b","since":-5}}"#,
        r#"{"type":"history","payload":{"channel":"a:b","limit":1.5}}"#,
        r#"{"type":"mark_read","payload":{"channel":"a:b","offset":-1}}"#,
        r#"{"type":"received","payload":{"channel":"a:b","offsets":[1,-2]}}"#,
        r#"{"type":"received","payload":{"channel":"a:b"}}"#,
    ] {
        assert_eq!(code_of(bad), ErrorCode::InvalidPayload, "{bad}");
    }
    assert!(parse_client_frame(
        r#"{"type":"history","payload":{"channel":"a:b","since":9007199254740991}}"#
    )
    .is_ok());
    // Deep nesting is never parsed into a tree: it passes through raw, no recursion.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = parse_client_frame(&format!(
        r#"{{"type":"x","channel":"a:b","payload":{deep}}}"#
    ));
    assert!(r.is_ok());
    let unbalanced = format!(
        r#"{{"type":"x","channel":"a:b","payload":{}}}"#,
        "[".repeat(100_000)
    );
    assert_eq!(code_of(&unbalanced), ErrorCode::InvalidMessage);
}

#[test]
fn id_is_kept_on_errors_and_commands() {
    let e = parse_client_frame(r#"{"type":"nope","id":"r1"}"#).expect_err("unknown");
    assert_eq!(e.id.as_deref(), Some("r1"));
    let f = parse_client_frame(r#"{"type":"ping","id":"r2","timestamp":"x"}"#).expect("ok");
    assert_eq!(f.id.as_deref(), Some("r2"));
    assert!(matches!(f.command, Command::Ping));
}

#[test]
fn publish_keeps_raw_payload() {
    let f = parse_client_frame(
            r#"{"type":"chat_message","channel":"chat:1","payload":{"n":123456789012345678901234567890},"volatile":true}"#,
        )
        .expect("publish");
    match f.command {
        Command::Publish {
            event,
            payload,
            volatile,
            key,
            delete,
            ..
        } => {
            assert_eq!(key, None);
            assert!(!delete);
            assert_eq!(event, "chat_message");
            assert_eq!(payload.get(), r#"{"n":123456789012345678901234567890}"#);
            assert!(volatile);
        }
        other => panic!("expected publish, got {other:?}"),
    }
}

/// One golden test per client frame: the JSON a client sends, and what it means.
mod golden {
    use super::*;

    fn parse(text: &str) -> ClientFrame {
        parse_client_frame(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn every_client_frame() {
        let f = parse(r#"{"type":"auth","id":"1","payload":{"token":"t"}}"#);
        assert_eq!(f.id.as_deref(), Some("1"));
        assert!(matches!(f.command, Command::Auth { token: Some(t), resume: None } if t == "t"));
        let f = parse(r#"{"type":"auth","payload":{"resume":"r"}}"#);
        assert!(matches!(f.command, Command::Auth { token: None, resume: Some(r) } if r == "r"));
        let f = parse(
            r#"{"type":"subscribe","payload":{"channel":"chat:1","token":"s","since":{"offset":4,"epoch":"e"},"keys":["a"]}}"#,
        );
        match f.command {
            Command::Subscribe {
                channel,
                token,
                since,
                keys,
            } => {
                assert_eq!(channel, "chat:1");
                assert_eq!(token.as_deref(), Some("s"));
                assert_eq!(
                    since,
                    Some(Since {
                        offset: 4,
                        epoch: "e".into()
                    })
                );
                assert_eq!(keys, Some(vec!["a".to_owned()]));
            }
            other => panic!("{other:?}"),
        }
        // The seed-003 client puts the channel at the top level.
        let f = parse(r#"{"type":"unsubscribe","channel":"chat:1"}"#);
        assert!(matches!(f.command, Command::Unsubscribe { channel } if channel == "chat:1"));
        assert!(matches!(parse(r#"{"type":"ping"}"#).command, Command::Ping));
        let f = parse(r#"{"type":"presence","payload":{"channel":"chat:1"}}"#);
        assert!(matches!(f.command, Command::Presence { channel } if channel == "chat:1"));
        let f = parse(r#"{"type":"history","payload":{"channel":"chat:1","limit":5,"since":2}}"#);
        assert!(matches!(
            f.command,
            Command::History {
                limit: Some(5),
                since: Some(2),
                ..
            }
        ));
        let f = parse(r#"{"type":"mark_read","payload":{"channel":"user:1","offset":9}}"#);
        assert!(matches!(f.command, Command::MarkRead { offset: 9, .. }));
        let f = parse(r#"{"type":"received","payload":{"channel":"user:1","offset":9}}"#);
        assert!(matches!(f.command, Command::Received { offsets, .. } if offsets == [9]));
        let f = parse(r#"{"type":"received","payload":{"channel":"user:1","offsets":[3,4]}}"#);
        assert!(matches!(f.command, Command::Received { offsets, .. } if offsets == [3, 4]));
        let f = parse(r#"{"type":"unread","payload":{"channels":["chat:1"]}}"#);
        assert!(matches!(f.command, Command::Unread { channels: Some(c) } if c == ["chat:1"]));
        let f = parse(r#"{"type":"unread"}"#);
        assert!(matches!(f.command, Command::Unread { channels: None }));
        let f = parse(r#"{"type":"state","payload":{"channel":"stock:1","keys":["a","b"]}}"#);
        assert!(matches!(f.command, Command::State { keys: Some(k), .. } if k.len() == 2));
        let f = parse(
            r#"{"type":"price","channel":"stock:1","key":"sku1","payload":{"p":1},"volatile":false}"#,
        );
        assert!(
            matches!(f.command, Command::Publish { key: Some(k), delete: false, .. } if k == "sku1")
        );
        let f = parse(r#"{"type":"price","channel":"stock:1","key":"sku1","delete":true}"#);
        assert!(matches!(f.command, Command::Publish { delete: true, .. }));
        let f = parse(r#"{"type":"offer","channel":"stream:1","to":"u2","payload":{}}"#);
        assert!(matches!(f.command, Command::Publish { to: Some(t), .. } if t == "u2"));
        for t in CLIENT_TYPES_SEEN {
            assert!(crate::protocol::CLIENT_TYPES.contains(t), "{t}");
        }
    }

    const CLIENT_TYPES_SEEN: &[&str] = &[
        "auth",
        "subscribe",
        "unsubscribe",
        "ping",
        "presence",
        "history",
        "mark_read",
        "received",
        "unread",
        "state",
    ];
}
