//! Where a relay session starts publishing, stream by stream.
//!
//! Normally right after the sink's cursor. But JetStream can lose messages it
//! has acknowledged: killing two of a three-node cluster's servers with SIGKILL
//! lost the last 1,309 acknowledged messages of a three-replica stream
//! (nats-server 2.9.10; `it::relay::a_nats_cluster_loses_a_node_and_then_its_quorum`;
//! upstream, nats-server#3402, #6236, #6888). The cursor then says delivered
//! what the stream no longer holds, and the relay would go on from there.
//!
//! So every session compares each stream's last message with the last event
//! the cursor routed to that stream. A stream that ends earlier is resumed
//! after its own last message: the events in between are published again
//! (streams that still hold them drop them as duplicates within the duplicate
//! window), and the cursor, which never moves backwards, moves on once the
//! relay passes it.
//!
//! The session's first publish to a stream still carries no expected last
//! message id: after such a loss the stream's own record of its last id was
//! stale (it named an older message than the one it ended with, so every
//! chained publish was refused, in the same test), and the chain begins again
//! with the first publish it stores.

use crate::sink::Cursor;
use crate::streams::StreamMap;
use async_nats::jetstream::Context;
use tokio_postgres::Client;
use uuid::Uuid;

/// Outbox events read per step of the backward search for each stream's last
/// routed event, and the most steps: a stream whose last event lies further
/// back (a rarely used one) is not checked.
const PAGE: i64 = 1000;
const PAGES: usize = 20;

/// A stream's end as JetStream holds it and as the cursor says it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEnd {
    /// The Nats-Msg-Id of the stream's last message, and that event's place in
    /// the outbox (None: no message, or not an event of this outbox).
    pub held: Option<(String, Option<Cursor>)>,
    /// The last event at or before the cursor routed to this stream.
    pub expected: Option<(Uuid, Cursor)>,
}

/// Pure decision: where to resume, given each stream's end. A stream behind
/// (its last message is an earlier event than the cursor routed to it) pulls
/// the start back to its last message. Also returns, by stream index, what is
/// wrong with the streams that do not end where the cursor says.
pub fn decide(cursor: Cursor, ends: &[StreamEnd]) -> (Cursor, Vec<(usize, String)>) {
    let mut from = cursor;
    let mut behind = Vec::new();
    for (i, end) in ends.iter().enumerate() {
        let Some((expected_id, expected_at)) = end.expected else {
            continue;
        };
        match &end.held {
            Some((id, _)) if *id == expected_id.to_string() => {}
            // Held and earlier: the stream lost what came after it.
            Some((id, Some(at))) if *at < expected_at => {
                behind.push((
                    i,
                    format!("ends at event {id}, not {expected_id}: resending from there"),
                ));
                from = from.min(*at);
            }
            // After the cursor: acknowledged before the cursor was moved
            // (a crash in between); the resend is deduplicated.
            Some((_, Some(_))) => {}
            Some((id, None)) => {
                behind.push((
                    i,
                    format!(
                        "ends with message {id}, which is no event of this outbox: not repaired"
                    ),
                ));
            }
            None => {
                behind.push((
                    i,
                    format!(
                        "is empty though event {expected_id} was acknowledged: not repaired \
                             (resend by hand: a new sink from the start of retained history)"
                    ),
                ));
            }
        }
    }
    (from, behind)
}

/// Reads each stream's end from JetStream and the outbox; where to resume.
pub async fn resume(
    js: &Context,
    db: &Client,
    sink: &str,
    map: &StreamMap,
    cursor: Cursor,
) -> anyhow::Result<Cursor> {
    // A sink that has delivered nothing has nothing to check: a sink created
    // "from now" has a cursor behind which lie events it never sent.
    let delivered: i64 = db
        .query_one(
            "SELECT delivered FROM spine.sinks WHERE name = $1",
            &[&sink],
        )
        .await?
        .get(0);
    if delivered == 0 {
        return Ok(cursor);
    }
    let expected = last_routed(db, map, cursor).await?;
    let mut ends = Vec::with_capacity(map.streams().len());
    for (stream, expected) in map.streams().iter().zip(expected) {
        let mut handle = js.get_stream(&stream.name).await?;
        let state = handle.info().await?.state.clone();
        let held = if state.messages == 0 {
            None
        } else {
            let last = handle.get_raw_message(state.last_sequence).await?;
            let id = last
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
                .unwrap_or_default();
            let at = match id.parse::<Uuid>() {
                Ok(event) => position(db, event).await?,
                Err(_) => None,
            };
            Some((id, at))
        };
        ends.push(StreamEnd { held, expected });
    }
    let (from, problems) = decide(cursor, &ends);
    for (i, problem) in problems {
        let stream = &map.streams()[i].name;
        tracing::error!(%stream, "JetStream stream {stream} {problem}");
    }
    Ok(from)
}

/// For each stream, the last event at or before `cursor` that `map` routes to
/// it, searching back at most [`PAGES`] pages.
async fn last_routed(
    db: &Client,
    map: &StreamMap,
    cursor: Cursor,
) -> anyhow::Result<Vec<Option<(Uuid, Cursor)>>> {
    let mut found: Vec<Option<(Uuid, Cursor)>> = vec![None; map.streams().len()];
    let mut at = cursor;
    for _ in 0..PAGES {
        let rows = db
            .query(
                "SELECT e.id, e.type, c.commit_seq, e.seq \
                   FROM spine.event_commits c \
                   CROSS JOIN LATERAL ( \
                        SELECT id, type, seq FROM spine.events e \
                         WHERE e.txid = c.txid AND e.tx_started_at = c.tx_started_at \
                           AND (c.commit_seq < $1 OR e.seq <= $2) \
                         ORDER BY e.seq DESC) e \
                  WHERE c.commit_seq <= $1 AND c.commit_seq IS NOT NULL \
                  ORDER BY c.commit_seq DESC, e.seq DESC LIMIT $3",
                &[&at.0, &at.1, &PAGE],
            )
            .await?;
        for row in &rows {
            let (stream, _) = map.route(row.get::<_, &str>(1));
            if found[stream].is_none() {
                found[stream] = Some((row.get(0), (row.get(2), row.get(3))));
            }
        }
        match rows.last() {
            Some(last) if found.iter().any(Option::is_none) && rows.len() as i64 == PAGE => {
                at = (last.get(2), last.get::<_, i64>(3) - 1);
            }
            _ => break,
        }
    }
    Ok(found)
}

/// An event's place in commit order.
async fn position(db: &Client, event: Uuid) -> anyhow::Result<Option<Cursor>> {
    Ok(db
        .query_opt(
            "SELECT c.commit_seq, e.seq FROM spine.events e \
               JOIN spine.event_commits c ON c.txid = e.txid AND c.tx_started_at = e.tx_started_at \
              WHERE e.id = $1 AND c.commit_seq IS NOT NULL",
            &[&event],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_stream_behind_pulls_the_start_back_to_its_last_message() {
        let cursor = (10, 100);
        let whole = StreamEnd {
            held: Some((id(1).to_string(), Some((10, 100)))),
            expected: Some((id(1), (10, 100))),
        };
        let (from, problems) = decide(cursor, std::slice::from_ref(&whole));
        assert_eq!((from, problems.len()), (cursor, 0));

        let behind = StreamEnd {
            held: Some((id(2).to_string(), Some((7, 70)))),
            expected: Some((id(3), (9, 90))),
        };
        let (from, problems) = decide(cursor, &[whole.clone(), behind]);
        assert_eq!(from, (7, 70));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, 1, "the second stream");

        // Acknowledged after the cursor: a normal redelivery, nothing to repair.
        let ahead = StreamEnd {
            held: Some((id(4).to_string(), Some((11, 110)))),
            expected: Some((id(1), (10, 100))),
        };
        assert_eq!(decide(cursor, &[ahead]), (cursor, vec![]));

        // Nothing expected (a new stream, or no event routed to it yet).
        let new = StreamEnd {
            held: None,
            expected: None,
        };
        assert_eq!(decide(cursor, &[new]), (cursor, vec![]));

        // Emptied, or ending with something that is not ours: reported, not guessed.
        for held in [None, Some(("x".to_string(), None))] {
            let lost = StreamEnd {
                held,
                expected: Some((id(1), (10, 100))),
            };
            let (from, problems) = decide(cursor, &[lost]);
            assert_eq!((from, problems.len()), (cursor, 1));
        }
    }
}
