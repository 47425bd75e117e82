//! What the search sink writes: which entities a batch of events touched, and for
//! each the document to put (it exists) or the id to delete (it is gone). Documents
//! are built from the entity's current row, not from the event, so replays, reorders
//! and reindexes all converge on the database's state.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// `spine_<kind>`: one index per entity kind (kinds are lowercase names).
pub fn index_name(kind: &str) -> String {
    format!("spine_{kind}")
}

/// The entities `data.Entity*` events touched, with their kind (from the event,
/// since a deleted entity's row is gone). Other events are ignored.
pub fn touched<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a Value)>,
) -> BTreeMap<Uuid, String> {
    let mut out = BTreeMap::new();
    for (event_type, data) in events {
        if !matches!(
            event_type,
            "data.EntityCreated" | "data.EntityUpdated" | "data.EntityDeleted"
        ) {
            continue;
        }
        let id = data["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        if let (Some(id), Some(kind)) = (id, data["kind"].as_str()) {
            out.insert(id, kind.to_string());
        }
    }
    out
}

/// An entity as read from `spine.entities`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub kind: String,
    pub version: i64,
    pub data: Value,
    pub updated_at: String,
}

/// The document of an entity: its fields under `data`, so no field of a user's can
/// collide with `id` or `owner_id` (the filter tenant tokens rely on).
pub fn document(e: &Entity) -> Value {
    json!({
        "id": e.id.to_string(),
        "owner_id": e.owner_id.to_string(),
        "kind": e.kind,
        "version": e.version,
        "updated_at": e.updated_at,
        "data": e.data,
    })
}

/// Per index: documents to put and ids to delete.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub put: BTreeMap<String, Vec<Value>>,
    pub delete: BTreeMap<String, Vec<String>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.delete.is_empty()
    }
}

/// What to write for `touched` entities, given those of them that still exist.
pub fn plan(touched: &BTreeMap<Uuid, String>, existing: &[Entity]) -> Plan {
    let mut plan = Plan::default();
    let found: BTreeMap<Uuid, &Entity> = existing.iter().map(|e| (e.id, e)).collect();
    for (id, kind) in touched {
        match found.get(id) {
            Some(e) => plan
                .put
                .entry(index_name(&e.kind))
                .or_default()
                .push(document(e)),
            None => plan
                .delete
                .entry(index_name(kind))
                .or_default()
                .push(id.to_string()),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: Uuid, kind: &str) -> Entity {
        Entity {
            id,
            owner_id: Uuid::nil(),
            kind: kind.into(),
            version: 2,
            data: json!({"name": "Ada", "id": "not the document id"}),
            updated_at: "2026-11-26T00:00:00Z".into(),
        }
    }

    /// Creates and updates of live entities become documents of their kind's
    /// index; entities gone from the table become deletes; other events are ignored.
    #[test]
    fn plan_puts_live_entities_and_deletes_gone_ones() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let ev = |t: &'static str, id: Uuid, kind: &str| {
            (t, json!({"id": id.to_string(), "kind": kind}))
        };
        let events = [
            ev("data.EntityCreated", a, "person"),
            ev("data.EntityUpdated", a, "person"),
            ev("data.EntityDeleted", b, "person"),
            ev("data.EntityCreated", c, "company"),
            (
                "shop.OrderPlaced",
                json!({"id": Uuid::new_v4().to_string(), "kind": "x"}),
            ),
        ];
        let touched = touched(events.iter().map(|(t, d)| (*t, d)));
        assert_eq!(touched.len(), 3);
        let plan = plan(&touched, &[entity(a, "person"), entity(c, "company")]);
        assert_eq!(plan.put["spine_person"].len(), 1);
        assert_eq!(plan.put["spine_person"][0]["id"], a.to_string());
        assert_eq!(
            plan.put["spine_person"][0]["data"]["id"],
            "not the document id"
        );
        assert_eq!(plan.put["spine_company"][0]["id"], c.to_string());
        assert_eq!(plan.delete["spine_person"], vec![b.to_string()]);
        assert!(!plan.delete.contains_key("spine_company"));
    }

    /// A batch without entity events plans nothing.
    #[test]
    fn nothing_to_do() {
        let data = json!({});
        assert!(plan(&touched([("a.Happened", &data)]), &[]).is_empty());
    }
}
