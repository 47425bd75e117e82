//! Phoenix channel frames as realtime-js 2.119 and Phoenix clients send them
//! (`../shared/research/supabase-wire.md` §1.2):
//!
//! - `vsn=2.0.0`: text frames `[join_ref, ref, topic, event, payload]`, and
//!   binary "user broadcast" frames — kind 3 from the client, kind 4 to it;
//! - `vsn=1.0.0` (the default when `vsn` is absent): text frames
//!   `{"topic", "event", "payload", "ref", "join_ref"}`.
//!
//! No maintained crate serves Phoenix channels (the Rust ones are clients); the
//! whole format is this file.

use bytes::Bytes;
use serde_json::{json, Value};

/// The serializer a socket speaks, from its `vsn` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    pub fn parse(vsn: Option<&str>) -> Result<Vsn, String> {
        match vsn {
            None | Some("1.0.0") => Ok(Vsn::V1),
            Some("2.0.0") => Ok(Vsn::V2),
            Some(other) => Err(format!(
                "unsupported vsn {other:?}: this server speaks 1.0.0 and 2.0.0"
            )),
        }
    }
}

/// A broadcast's user payload: JSON, or bytes (binary frames only).
#[derive(Debug, Clone, PartialEq)]
pub enum UserPayload {
    Json(Value),
    Binary(Bytes),
}

/// One message, either way.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

/// A client's frame, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Frame(Frame),
    /// A binary kind-3 broadcast push: `payload` of the broadcast, `user_event`
    /// its event.
    Broadcast {
        join_ref: Option<String>,
        msg_ref: Option<String>,
        topic: String,
        user_event: String,
        payload: UserPayload,
    },
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(pub String);

fn bad(reason: impl Into<String>) -> DecodeError {
    DecodeError(reason.into())
}

/// A ref is a string (realtime-js) or a number (some clients), or null.
fn reference(v: Value) -> Result<Option<String>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(bad("a ref must be a string, a number or null")),
    }
}

pub fn decode_text(vsn: Vsn, text: &str) -> Result<Inbound, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let (join_ref, msg_ref, topic, event, payload) = match (vsn, value) {
        (Vsn::V2, Value::Array(items)) if items.len() == 5 => {
            let mut it = items.into_iter();
            let mut next = || it.next().unwrap_or(Value::Null);
            (next(), next(), next(), next(), next())
        }
        (Vsn::V2, _) => {
            return Err(bad(
                "vsn 2.0.0 frames are [join_ref, ref, topic, event, payload]",
            ))
        }
        (Vsn::V1, Value::Object(mut map)) => {
            let mut take = |k: &str| map.remove(k).unwrap_or(Value::Null);
            (
                take("join_ref"),
                take("ref"),
                take("topic"),
                take("event"),
                take("payload"),
            )
        }
        (Vsn::V1, _) => {
            return Err(bad(
                "vsn 1.0.0 frames are {topic, event, payload, ref, join_ref} objects",
            ))
        }
    };
    let (Value::String(topic), Value::String(event)) = (topic, event) else {
        return Err(bad("topic and event must be strings"));
    };
    Ok(Inbound::Frame(Frame {
        join_ref: reference(join_ref)?,
        msg_ref: reference(msg_ref)?,
        topic,
        event,
        payload,
    }))
}

/// Binary frames: only kind 3 (a user broadcast push) comes from clients.
pub fn decode_binary(bytes: &[u8]) -> Result<Inbound, DecodeError> {
    const HEADER: usize = 7;
    if bytes.len() < HEADER {
        return Err(bad("binary frame shorter than its header"));
    }
    if bytes[0] != 3 {
        return Err(bad(format!(
            "binary frame kind {} (clients send kind 3)",
            bytes[0]
        )));
    }
    let lens = [bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]].map(usize::from);
    let encoding = bytes[6];
    let mut offset = HEADER;
    let mut field = |len: usize| -> Result<String, DecodeError> {
        let end = offset + len;
        let slice = bytes
            .get(offset..end)
            .ok_or_else(|| bad("binary frame shorter than its lengths"))?;
        offset = end;
        String::from_utf8(slice.to_vec()).map_err(|_| bad("binary frame field is not UTF-8"))
    };
    let join_ref = field(lens[0])?;
    let msg_ref = field(lens[1])?;
    let topic = field(lens[2])?;
    let user_event = field(lens[3])?;
    let _meta = field(lens[4])?;
    let rest = &bytes[offset..];
    let payload = match encoding {
        0 => UserPayload::Binary(Bytes::copy_from_slice(rest)),
        1 => UserPayload::Json(serde_json::from_slice(rest).map_err(|e| bad(e.to_string()))?),
        n => return Err(bad(format!("binary payload encoding {n} (0 or 1)"))),
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(Inbound::Broadcast {
        join_ref: non_empty(join_ref),
        msg_ref: non_empty(msg_ref),
        topic,
        user_event,
        payload,
    })
}

/// A frame as text for the socket's serializer.
pub fn encode(vsn: Vsn, frame: &Frame) -> String {
    match vsn {
        Vsn::V2 => json!([
            frame.join_ref,
            frame.msg_ref,
            frame.topic,
            frame.event,
            frame.payload
        ])
        .to_string(),
        Vsn::V1 => json!({
            "join_ref": frame.join_ref,
            "ref": frame.msg_ref,
            "topic": frame.topic,
            "event": frame.event,
            "payload": frame.payload,
        })
        .to_string(),
    }
}

/// A binary kind-4 user broadcast (vsn 2): how a binary payload reaches clients.
/// None when a field is longer than the format's 255 bytes.
pub fn encode_binary_broadcast(topic: &str, user_event: &str, payload: &[u8]) -> Option<Vec<u8>> {
    let (t, e) = (topic.as_bytes(), user_event.as_bytes());
    let (tl, el) = (u8::try_from(t.len()).ok()?, u8::try_from(e.len()).ok()?);
    let mut out = Vec::with_capacity(5 + t.len() + e.len() + payload.len());
    out.extend_from_slice(&[4, tl, el, 0, 0]);
    out.extend_from_slice(t);
    out.extend_from_slice(e);
    out.extend_from_slice(payload);
    Some(out)
}

/// A reply to a push: `phx_reply` with `{status, response}`.
pub fn reply(
    join_ref: Option<String>,
    msg_ref: Option<String>,
    topic: &str,
    ok: bool,
    response: Value,
) -> Frame {
    Frame {
        join_ref,
        msg_ref,
        topic: topic.to_string(),
        event: "phx_reply".into(),
        payload: json!({"status": if ok { "ok" } else { "error" }, "response": response}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsn_defaults_to_1_and_refuses_others() {
        assert_eq!(Vsn::parse(None), Ok(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Ok(Vsn::V2));
        assert!(Vsn::parse(Some("3.0.0")).is_err());
    }

    #[test]
    fn text_frames_round_trip_in_both_serializers() {
        let frame = Frame {
            join_ref: Some("1".into()),
            msg_ref: Some("2".into()),
            topic: "realtime:room".into(),
            event: "phx_join".into(),
            payload: json!({"config": {}}),
        };
        for vsn in [Vsn::V1, Vsn::V2] {
            assert_eq!(
                decode_text(vsn, &encode(vsn, &frame)),
                Ok(Inbound::Frame(frame.clone()))
            );
        }
        assert_eq!(
            encode(Vsn::V2, &frame),
            r#"["1","2","realtime:room","phx_join",{"config":{}}]"#
        );
    }

    #[test]
    fn malformed_text_frames_are_errors() {
        for text in [
            "",
            "nope",
            "[1,2,3]",
            r#"[null,null,5,"e",{}]"#,
            r#"[{},null,"t","e",{}]"#,
            "{}",
        ] {
            assert!(decode_text(Vsn::V2, text).is_err(), "{text}");
        }
        assert!(decode_text(Vsn::V1, r#"["1","1","t","e",{}]"#).is_err());
        // Numeric refs are accepted (some clients send them).
        assert!(decode_text(Vsn::V2, r#"[1,2,"t","e",{}]"#).is_ok());
    }

    #[test]
    fn kind_3_broadcasts_decode_as_realtime_js_encodes_them() {
        // realtime-js: kind, join_ref len, ref len, topic len, event len, meta len, encoding.
        let mut frame = vec![3, 1, 1, 8, 4, 0, 1];
        frame.extend_from_slice(b"12realtimeping");
        frame.extend_from_slice(br#"{"n":1}"#);
        let Inbound::Broadcast {
            join_ref,
            msg_ref,
            topic,
            user_event,
            payload,
        } = decode_binary(&frame).unwrap()
        else {
            panic!("not a broadcast");
        };
        assert_eq!(
            (join_ref.as_deref(), msg_ref.as_deref()),
            (Some("1"), Some("2"))
        );
        assert_eq!((topic.as_str(), user_event.as_str()), ("realtime", "ping"));
        assert_eq!(payload, UserPayload::Json(json!({"n": 1})));
        assert!(decode_binary(&[3, 9, 9, 9, 9, 9, 1]).is_err());
        assert!(decode_binary(&[4, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(decode_binary(&[3]).is_err());
    }

    #[test]
    fn kind_4_layout_matches_realtime_js_decoder() {
        let out = encode_binary_broadcast("t", "ev", b"xy").unwrap();
        assert_eq!(out, vec![4, 1, 2, 0, 0, b't', b'e', b'v', b'x', b'y']);
        assert!(encode_binary_broadcast(&"t".repeat(256), "e", b"").is_none());
    }
}
