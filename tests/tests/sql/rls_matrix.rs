//! The access matrix: for every table and view of the `spine` and `vault` schemas
//! (found in the catalog, so a new table is covered without touching this test),
//! as `anon`, two `authenticated` users and `service_role`, try SELECT, INSERT,
//! UPDATE, DELETE and TRUNCATE the way PostgREST would issue them. No user sees or
//! touches another user's rows; nobody writes a table directly (all writes go
//! through Spine's functions); RLS is enabled on every table. Partitions are
//! reached through their parent, which the matrix covers (that no role reads one
//! directly is tests/tests/sql/partitions.rs's; their names change daily). The matrix is the
//! page `docs/sql/access-matrix.md`: the test writes it, and fails when what it
//! found differs from the page (commit the rewritten page if the change is right).

use serde_json::json;
use spine_tests::{act_as, connect, one, sqlstate};
use std::collections::BTreeMap;
use std::path::Path;
use tokio_postgres::Client;
use uuid::Uuid;

/// Tables every signed-in user may read whole: catalogs without user data.
const USER_CATALOGS: &[&str] = &[
    "spine.queues",
    "spine.plugins",
    "spine.embedding_kinds",
    "spine.schemas",
    "spine.schema_bindings",
];

/// Tables whose rows are gone once the seed's transactions end, so there is
/// nothing of the seed's to find in them: transaction markers, and audit rows
/// waiting for the sealer (sealed by the seed's own commits).
const TRANSIENT: &[&str] = &["spine.audit_transactions", "spine.audit_pending"];

struct Relation {
    name: String,
    is_table: bool,
    rls: bool,
    /// The column that says whose a row is (`owner_id`, or `actor` in the audit log).
    owner_column: Option<String>,
    /// A column an UPDATE may name (not an identity or generated column, which
    /// would fail before the privilege check and prove nothing).
    plain_column: String,
}

async fn relations(db: &Client) -> Vec<Relation> {
    db.query(
        "SELECT n.nspname || '.' || c.relname, c.relkind = 'r', c.relrowsecurity, \
                (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
                   AND a.attname IN ('owner_id', 'actor') AND NOT a.attisdropped LIMIT 1), \
                (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid \
                   AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = '' \
                   AND a.attgenerated = '' ORDER BY a.attnum LIMIT 1) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname IN ('spine', 'vault') AND c.relkind IN ('r', 'p', 'v') \
            AND NOT c.relispartition \
          ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Relation {
        name: r.get(0),
        is_table: r.get(1),
        rls: r.get(2),
        owner_column: r.get(3),
        plain_column: r.get(4),
    })
    .collect()
}

/// A principal as PostgREST would present it.
#[derive(Clone)]
struct Principal {
    label: &'static str,
    role: &'static str,
    user: Option<Uuid>,
}

impl Principal {
    fn claims(&self) -> serde_json::Value {
        match self.user {
            Some(u) => json!({"sub": u.to_string(), "role": self.role}),
            None => json!({"role": self.role}),
        }
    }
}

/// Runs `sql` as the principal in a rolled-back transaction: Ok(rows affected or
/// the count it selected) or Err(SQLSTATE).
async fn attempt(db: &mut Client, who: &Principal, sql: &str) -> Result<i64, String> {
    let tx = db.transaction().await.unwrap();
    act_as(&tx, who.role, who.claims()).await;
    let result = if sql.starts_with("SELECT") {
        tx.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0))
    } else {
        tx.execute(sql, &[]).await.map(|n| n as i64)
    };
    let outcome = result.map_err(|e| sqlstate(&e).unwrap_or("?").to_string());
    tx.rollback().await.unwrap();
    outcome
}

/// Gives both users rows in every table that has owners: events, live and
/// archived jobs, consents and the audit rows those actions write, a rule, its
/// firing and the state it sets, a source, a raw record, entities, a key, an
/// edge, a schedule (on February 31st: it never fires).
async fn seed(db: &mut Client, users: [Uuid; 2]) {
    let queue = format!("m{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.create_queue($1, user_enqueue => true)",
        &[&queue],
    )
    .await
    .unwrap();
    let plugin = format!("m{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.register_plugin($1)",
        &[&json!({"name": plugin, "version": "1.0.0", "permissions": {"secrets": ["X"]}})],
    )
    .await
    .unwrap();
    for user in users {
        let tx = db.transaction().await.unwrap();
        act_as(
            &tx,
            "authenticated",
            json!({"sub": user.to_string(), "role": "authenticated"}),
        )
        .await;
        tx.batch_execute(&format!(
            "SELECT spine.save_rule('matrix', 'matrix.RowWritten', 'true', \
                 '[{{\"set_state\": {{\"key\": \"written\", \"value\": true}}}}]'); \
             SELECT spine.save_source('matrix', '{{\"kind\": \"person\", \"fields\": {{\"email\": \
                 {{\"path\": \"email\", \"normalize\": [\"email\"]}}}}, \"identity\": [\"email\"]}}'); \
             SELECT spine.ingest('matrix', '[{{\"id\": 1, \"email\": \"m@example.com\"}}]'); \
             SELECT spine.emit('matrix.RowWritten', '{{}}'); \
             SELECT spine.enqueue('{queue}', '{{}}'); \
             SELECT spine.enqueue('{queue}', '{{}}', idempotency_key => 'archived'); \
             SELECT spine.grant_consent('{plugin}', ARRAY['*']); \
             SELECT spine.schedule('matrix', '0 0 31 2 *', '{queue}', '{{}}');"
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    // Complete the keyed jobs: they move to the archive.
    db.batch_execute(&format!(
        "SELECT spine.complete_jobs(array_agg(id)) FROM spine.fetch_jobs(ARRAY['{queue}'], 'matrix', 10) \
          WHERE idempotency_key = 'archived'"
    ))
    .await
    .unwrap();
}

/// Zero leaks across the whole matrix, and the matrix page up to date.
#[tokio::test]
async fn no_role_reads_or_writes_what_it_should_not() {
    let mut db = connect().await;
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    seed(&mut db, [alice, bob]).await;
    let principals = [
        Principal {
            label: "anon",
            role: "anon",
            user: None,
        },
        Principal {
            label: "authenticated (alice)",
            role: "authenticated",
            user: Some(alice),
        },
        Principal {
            label: "authenticated (bob)",
            role: "authenticated",
            user: Some(bob),
        },
        Principal {
            label: "service_role",
            role: "service_role",
            user: None,
        },
    ];
    let mut matrix: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let rels = relations(&db).await;
    assert!(rels.len() >= 15, "found only {} relations", rels.len());
    for rel in &rels {
        if rel.is_table && !rel.rls {
            problems.push(format!("{}: row level security is not enabled", rel.name));
        }
        let theirs = |me: Uuid| {
            rel.owner_column.as_ref().map(|col| {
                format!(
                    "SELECT count(*) FROM {} WHERE {col} IS DISTINCT FROM '{me}'",
                    rel.name
                )
            })
        };
        // Both users own rows here, so "sees none of the other's" is not vacuous.
        if let Some(col) = &rel.owner_column {
            let seeded: i64 = one(
                &db,
                &format!(
                    "SELECT count(DISTINCT {col}) FROM {} WHERE {col} IN ($1, $2)",
                    rel.name
                ),
                &[&alice, &bob],
            )
            .await;
            if rel.is_table && !TRANSIENT.contains(&rel.name.as_str()) && seeded != 2 {
                problems.push(format!(
                    "{}: the seed gave it rows of {seeded} of the 2 users",
                    rel.name
                ));
            }
        }
        let mut cells = Vec::new();
        for who in &principals {
            let select = attempt(&mut db, who, &format!("SELECT count(*) FROM {}", rel.name)).await;
            let read = match (&select, who.user, &rel.owner_column) {
                (Err(code), _, _) if code == "42501" => "—".to_string(),
                (Err(code), _, _) => {
                    problems.push(format!(
                        "{} as {}: SELECT failed with {code}",
                        rel.name, who.label
                    ));
                    format!("error {code}")
                }
                (Ok(_), Some(me), Some(_)) => {
                    let leaked = attempt(&mut db, who, &theirs(me).unwrap()).await;
                    if leaked != Ok(0) {
                        problems.push(format!(
                            "{} as {}: sees others' rows: {leaked:?}",
                            rel.name, who.label
                        ));
                    }
                    "own rows".to_string()
                }
                (Ok(_), _, _) if who.role == "service_role" => "all rows".to_string(),
                (Ok(_), _, _)
                    if USER_CATALOGS.contains(&rel.name.as_str()) && who.user.is_some() =>
                {
                    "all rows (catalog)".to_string()
                }
                (Ok(n), _, _) => {
                    problems.push(format!(
                        "{} as {}: readable ({n} rows) but has no owner column",
                        rel.name, who.label
                    ));
                    format!("{n} rows")
                }
            };
            if who.role == "service_role" && read == "all rows" {
                if let Some(col) = &rel.owner_column {
                    // service_role (BYPASSRLS) sees both users' rows.
                    let both = attempt(
                        &mut db,
                        who,
                        &format!("SELECT count(DISTINCT {col}) FROM {} WHERE {col} IN ('{alice}', '{bob}')", rel.name),
                    )
                    .await;
                    if rel.is_table && both != Ok(2) {
                        problems.push(format!(
                            "{}: service_role does not see every user's rows: {both:?}",
                            rel.name
                        ));
                    }
                }
            }
            let col = &rel.plain_column;
            let mut writes = vec![
                format!("INSERT INTO {} DEFAULT VALUES", rel.name),
                format!("UPDATE {} SET {col} = {col}", rel.name),
                format!("DELETE FROM {}", rel.name),
            ];
            if rel.is_table {
                writes.push(format!("TRUNCATE {}", rel.name));
            }
            let mut writable = Vec::new();
            for sql in writes {
                match attempt(&mut db, who, &sql).await {
                    Err(code) if code == "42501" => {}
                    other => writable.push(format!("{sql} → {other:?}")),
                }
            }
            if !writable.is_empty() {
                problems.push(format!(
                    "{} as {}: direct writes allowed: {writable:?}",
                    rel.name, who.label
                ));
            }
            cells.push(format!(
                "{read}; {}",
                if writable.is_empty() {
                    "no writes"
                } else {
                    "WRITES"
                }
            ));
        }
        matrix.insert(rel.name.clone(), cells);
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/sql/access-matrix.md");
    let written = std::fs::read_to_string(&page).unwrap_or_default();
    let found = matrix_page(&matrix);
    if written != found {
        std::fs::write(&page, &found).expect("write docs/sql/access-matrix.md");
        panic!(
            "the access matrix differs from {}: the page is rewritten with what this run \
             found; review it with `git diff` and commit it",
            page.display()
        );
    }
}

/// The page `docs/sql/access-matrix.md`, generated (never edited by hand).
fn matrix_page(matrix: &BTreeMap<String, Vec<String>>) -> String {
    let mut page = String::from(
        "# Access matrix\n\n\
         <!-- Written by tests/tests/sql/rls_matrix.rs; do not edit by hand. -->\n\n\
         What each role can do with each table and view of the `spine` and `vault` \
         schemas, as the test `rls_matrix` found it: it enumerates the catalog (a new \
         table is covered without touching the test), tries SELECT, INSERT, UPDATE, \
         DELETE and TRUNCATE as each role the way PostgREST issues them, and fails on \
         any leak. \"own rows\": RLS shows only rows whose owner is `auth.uid()`, \
         checked against rows of both users; \"no writes\": INSERT, UPDATE, DELETE and \
         TRUNCATE are all refused with 42501, since every write goes through Spine's \
         functions.\n\n\
         | relation | anon | authenticated (alice) | authenticated (bob) | service_role |\n\
         |---|---|---|---|---|\n",
    );
    for (name, cells) in matrix {
        page.push_str(&format!("| `{name}` | {} |\n", cells.join(" | ")));
    }
    page
}
