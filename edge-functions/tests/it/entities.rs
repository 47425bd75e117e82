//! A plugin's entity permissions (`entities.read` / `entities.write` kinds in its
//! manifest, consented by the user) bound what its `ctx.db` calls reach: the
//! table through RLS, and every Spine function that writes entities.

use crate::host::{deploy, token_for, Server};
use serde_json::{json, Value};
use spine_tests::{as_user, connect, one, seal_audit};
use uuid::Uuid;

const PROBE: &str = r#"
const attempt = async (f) => { try { return { ok: await f() }; } catch (e) { return { err: e.name, message: e.message }; } };
Deno.serve(async (req, ctx) => {
  const b = await req.json();
  return Response.json({
    kinds: await attempt(async () => (await ctx.db.select("spine.entities", { columns: ["kind"] })).rows.map((r) => r.kind).sort()),
    write_note: await attempt(async () => (await ctx.db.rpc("spine.upsert_entity", { kind: "note", data: { t: 1 } })).rows.length),
    write_person: await attempt(() => ctx.db.rpc("spine.upsert_entity", { kind: "person", data: { n: "x" } })),
    update_person: await attempt(() => ctx.db.rpc("spine.upsert_entity", { kind: "person", id: b.person, data: { n: "y" } })),
    delete_person: await attempt(() => ctx.db.rpc("spine.delete_entity", { id: b.person })),
    edge: await attempt(() => ctx.db.rpc("spine.add_edge", { from_id: b.note, rel: "about", to_id: b.person })),
    ingest: await attempt(() => ctx.db.rpc("spine.ingest", { source: "people", records: [{ id: "1", name: "Ada" }] })),
  });
});"#;

fn denied(result: &Value, what: &str) {
    let r = &result[what];
    assert_eq!(r["err"], "DatabaseError", "{what}: {result}");
    let message = r["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("42501") && message.contains("entities.write"),
        "{what}: {message}"
    );
}

/// Before consent the plugin sees no entity and writes none, although alice can;
/// after she consents to what it declares (notes) it reads and writes notes, and
/// still nothing of kinds it does not declare (people): not through the table,
/// upsert, delete, edges or ingest. Denials of writes are on record.
#[tokio::test]
async fn entity_permissions_bound_a_plugins_reads_and_writes() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let name = deploy(
        &db,
        json!({"entities": {"read": ["note"], "write": ["note"]}}),
        json!({"wall_ms": 10000}),
        PROBE,
    )
    .await;
    let (note, person): (Uuid, Uuid) = as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.save_source('people', $1)",
            &[&json!({"kind": "person", "fields": {"name": {"path": "name", "required": true}}})],
        )
        .await
        .unwrap();
        let note = one(tx, "SELECT spine.upsert_entity('note', '{}')", &[]).await;
        let person = one(tx, "SELECT spine.upsert_entity('person', '{}')", &[]).await;
        (note, person)
    })
    .await;
    let server = Server::start().await;
    let token = token_for(alice);
    let body = json!({"note": note, "person": person});

    let (status, before) = server.call(&name, Some(&token), body.clone()).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        before["kinds"]["ok"],
        json!([]),
        "nothing consented: {before}"
    );
    for what in [
        "write_note",
        "write_person",
        "update_person",
        "delete_person",
        "edge",
        "ingest",
    ] {
        denied(&before, what);
    }

    as_user(&mut db, alice, async |tx| {
        tx.execute(
            "SELECT spine.grant_consent($1, ARRAY['entities.read:note', 'entities.write:note'])",
            &[&name],
        )
        .await
        .unwrap();
    })
    .await;
    let (_, after) = server.call(&name, Some(&token), body).await;
    assert_eq!(after["kinds"]["ok"], json!(["note"]), "notes only: {after}");
    assert_eq!(after["write_note"]["ok"], 1, "{after}");
    for what in [
        "write_person",
        "update_person",
        "delete_person",
        "edge",
        "ingest",
    ] {
        denied(&after, what);
    }

    // Nothing of alice's people changed: the refused delete and update rolled back.
    let people: Vec<Value> = db
        .query(
            "SELECT data FROM spine.entities WHERE owner_id = $1 AND kind = 'person'",
            &[&alice],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(people, vec![json!({})]);
    let notes: i64 = one(
        &db,
        "SELECT count(*) FROM spine.entities WHERE owner_id = $1 AND kind = 'note'",
        &[&alice],
    )
    .await;
    assert_eq!(notes, 2, "hers, and the one the plugin wrote after consent");
    // Her own reads are not narrowed: no plugin acts in her session.
    let hers: i64 = as_user(&mut db, alice, async |tx| {
        one(tx, "SELECT count(*) FROM spine.entities", &[]).await
    })
    .await;
    assert_eq!(
        hers, 4,
        "two notes, her person, and the source's own entity"
    );
    seal_audit(&db).await;
    let on_record: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE target = $1 AND action = 'policy.denied' \
            AND details->>'action' = 'entities.write' AND details->>'resource' = 'person'",
        &[&format!("plugin:{name}")],
    )
    .await;
    assert!(on_record >= 8, "each refused write is audited: {on_record}");
}
