//! The vault against the real cluster: plaintext never reaches disk, a wrong or
//! missing key is a clear error and never garbage, only service_role and the
//! function host decrypt, every decryption is audited, rotation re-encrypts while
//! readers keep reading, plugins get only declared and consented secrets, and an
//! existing (supabase_vault) `vault` schema is used instead of Spine's own.

use serde_json::json;
use spine_tests::{act_as, column, connect, database_url, one, seal_audit, sqlstate};
use std::path::{Path, PathBuf};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

async fn create_secret(db: &Client, value: &str, name: &str) -> Uuid {
    one(db, "SELECT vault.create_secret($1, $2)", &[&value, &name]).await
}

/// A key file the `postgres` user can read (tests only: the key is throwaway).
fn key_file(lines: &[(i32, [u8; 32])]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("spine-test-{}.key", Uuid::new_v4().simple()));
    let text: String = lines
        .iter()
        .map(|(v, k)| {
            let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
            format!("{v}:{hex}\n")
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Other tests create and drop databases meanwhile: a directory may vanish.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!(
            "read {} (the test runs as root, as CI does): {e}",
            dir.display()
        ),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files_containing(&path, needle, found);
        } else if kind.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                if contains(&bytes, needle) {
                    found.push(path);
                }
            }
        }
    }
}

/// After creating, updating and reading secrets and a CHECKPOINT, no file of the
/// cluster — data files, WAL, server log — holds the plaintext; the table holds
/// base64 ciphertext only.
#[tokio::test]
async fn plaintext_never_reaches_disk() {
    let db = connect().await;
    let first = format!("plain-{}", Uuid::new_v4().simple());
    let second = format!("plain-{}", Uuid::new_v4().simple());
    let id = create_secret(&db, &first, &format!("disk-{}", Uuid::new_v4().simple())).await;
    db.execute("SELECT vault.update_secret($1, $2)", &[&id, &second])
        .await
        .unwrap();
    let read: String = one(
        &db,
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE id = $1",
        &[&id],
    )
    .await;
    assert_eq!(read, second);
    let stored: String = one(
        &db,
        "SELECT secret FROM vault.secrets WHERE id = $1",
        &[&id],
    )
    .await;
    assert!(!stored.contains("plain-"));
    db.batch_execute("CHECKPOINT").await.unwrap();

    let data_dir: String = one(&db, "SHOW data_directory", &[]).await;
    let cluster_root = Path::new(&data_dir).parent().unwrap().to_path_buf();
    for plaintext in [&first, &second] {
        let mut found = Vec::new();
        files_containing(&cluster_root, plaintext.as_bytes(), &mut found);
        assert!(found.is_empty(), "{plaintext} found in {found:?}");
    }
    // The check can fail: the name (not secret) is in the data files.
    let mut found = Vec::new();
    files_containing(&cluster_root, b"disk-", &mut found);
    assert!(!found.is_empty(), "the walk did not reach the data files");
}

/// A wrong key is XX001 naming the secret and key version, a key version missing
/// from the keyring and a missing key are 55000; none returns anything.
#[tokio::test]
async fn wrong_or_missing_key_is_a_clear_error() {
    let db = connect().await;
    let plaintext = format!("plain-{}", Uuid::new_v4().simple());
    let id = create_secret(
        &db,
        &plaintext,
        &format!("wrongkey-{}", Uuid::new_v4().simple()),
    )
    .await;
    let version: i32 = one(
        &db,
        "SELECT key_id FROM vault.secrets WHERE id = $1",
        &[&id],
    )
    .await;
    let read = "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE id = $1";

    let wrong = key_file(&[(version, [0x42; 32])]);
    db.batch_execute(&format!("SET spine.vault_key_file = '{}'", wrong.display()))
        .await
        .unwrap();
    let err = db.query(read, &[&id]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("XX001"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains(&id.to_string()) && message.contains("key version"),
        "{message}"
    );
    assert!(!message.contains(&plaintext));

    let other_version = key_file(&[(version + 100, [0x42; 32])]);
    db.batch_execute(&format!(
        "SET spine.vault_key_file = '{}'",
        other_version.display()
    ))
    .await
    .unwrap();
    let err = db.query(read, &[&id]).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("55000"), "{err:?}");

    db.batch_execute("SET spine.vault_key_file = ''")
        .await
        .unwrap();
    let err = db
        .query("SELECT vault.create_secret('x')", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("55000"), "{err:?}");
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("spine.vault_key_file"));

    db.batch_execute("RESET spine.vault_key_file")
        .await
        .unwrap();
    // Choosing a key (supabase_vault's new_key_id) is refused, not ignored.
    let err = db
        .query(
            "SELECT vault.create_secret('x', NULL, '', gen_random_uuid())",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("0A000"), "{err:?}");
    let back: String = one(&db, read, &[&id]).await;
    assert_eq!(back, plaintext);
    for f in [wrong, other_version] {
        std::fs::remove_file(f).unwrap();
    }
}

/// Only service_role decrypts; users and anon cannot even read the ciphertext, and
/// the function host's role reaches secrets only through plugin_secrets. Each
/// decrypted row read is one audit row.
#[tokio::test]
async fn only_privileged_roles_decrypt_and_each_read_is_audited() {
    let mut db = connect().await;
    let name = format!("roles-{}", Uuid::new_v4().simple());
    let id = create_secret(&db, "s3cret", &name).await;
    for (role, claims) in [
        (
            "authenticated",
            json!({"sub": Uuid::new_v4().to_string(), "role": "authenticated"}),
        ),
        ("anon", json!({"role": "anon"})),
    ] {
        for sql in [
            "SELECT decrypted_secret FROM vault.decrypted_secrets",
            "SELECT secret FROM vault.secrets",
            "SELECT vault.create_secret('x')",
            "SELECT spine.vault_decrypt(id, secret, key_id, nonce) FROM vault.secrets",
            "SELECT spine.rotate_vault_key()",
        ] {
            let tx = db.transaction().await.unwrap();
            act_as(&tx, role, claims.clone()).await;
            let err = tx.query(sql, &[]).await.unwrap_err();
            assert_eq!(sqlstate(&err), Some("42501"), "{role}: {sql}: {err:?}");
            tx.rollback().await.unwrap();
        }
    }
    for role in ["service_role"] {
        let tx = db.transaction().await.unwrap();
        act_as(&tx, role, json!({"role": role})).await;
        let value: String = one(
            &tx,
            "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = $1",
            &[&name],
        )
        .await;
        assert_eq!(value, "s3cret", "{role}");
        tx.commit().await.unwrap();
    }
    seal_audit(&db).await;
    let audited: Vec<String> = column(
        &db,
        "SELECT role FROM spine.audit_log WHERE action = 'vault.secret_decrypted' \
             AND target = 'secret:' || $1 ORDER BY seq",
        &[&id.to_string()],
    )
    .await;
    assert_eq!(audited, ["service_role"]);
    let created: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE action = 'vault.secret_created' AND target = 'secret:' || $1",
        &[&id.to_string()],
    )
    .await;
    assert_eq!(created, 1);
}

/// A plugin gets the secrets its manifest declares AND the user consented to, the
/// user's own `<uid>/<NAME>` before the shared `<NAME>`; nothing else.
#[tokio::test]
async fn plugin_secrets_are_declared_and_consented_only() {
    let mut db = connect().await;
    let tag = Uuid::new_v4().simple().to_string();
    let (shared, personal, undeclared) = (format!("S{tag}"), format!("P{tag}"), format!("U{tag}"));
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    create_secret(&db, "shared-value", &shared).await;
    create_secret(&db, "bob-personal", &format!("{bob}/{personal}")).await;
    create_secret(&db, "generic-personal", &personal).await;
    create_secret(&db, "never", &undeclared).await;
    let plugin = format!("p{tag}");
    db.execute(
        "SELECT spine.register_plugin($1)",
        &[&json!({"name": plugin, "version": "1.0.0",
                  "permissions": {"secrets": [shared, personal]}})],
    )
    .await
    .unwrap();
    let secrets_for = |who: Uuid| {
        let plugin = plugin.clone();
        async move {
            let mut db = connect().await;
            let tx = db.transaction().await.unwrap();
            act_as(
                &tx,
                "spine_functions",
                json!({"sub": who.to_string(), "role": "authenticated"}),
            )
            .await;
            let rows = tx
                .query(
                    "SELECT name, secret FROM spine.plugin_secrets($1) ORDER BY name",
                    &[&plugin],
                )
                .await
                .unwrap();
            tx.commit().await.unwrap();
            rows.iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .collect::<Vec<_>>()
        }
    };
    assert!(secrets_for(alice).await.is_empty(), "no consent yet");
    for (who, scopes) in [
        (alice, vec![format!("secrets.read:{shared}")]),
        (bob, vec!["secrets.read:*".to_string()]),
    ] {
        let tx = db.transaction().await.unwrap();
        act_as(&tx, "authenticated", json!({"sub": who.to_string()})).await;
        tx.execute("SELECT spine.grant_consent($1, $2)", &[&plugin, &scopes])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        secrets_for(alice).await,
        [(shared.clone(), "shared-value".to_string())],
        "alice consented to the shared secret only"
    );
    assert_eq!(
        secrets_for(bob).await,
        [
            (personal.clone(), "bob-personal".to_string()),
            (shared.clone(), "shared-value".to_string())
        ]
    );
}

/// Rotation in its own database (it re-encrypts every secret): readers keep
/// reading while it runs (uncommitted, they see the old rows under the old key),
/// afterwards every secret is under the new version and still decrypts; a backend
/// whose key file lacks the new version gets 55000, not garbage.
#[tokio::test]
async fn rotation_reencrypts_while_readers_keep_reading() {
    let admin = connect().await;
    let dbname = format!("spine_rotation_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {dbname}"))
        .await
        .unwrap();
    let url = database_url().replace("/spine", &format!("/{dbname}"));
    let session = || async {
        let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        c
    };
    let k1 = [0x11; 32];
    let old_keys = key_file(&[(1, k1)]);
    let new_keys = key_file(&[(1, k1), (2, [0x22; 32])]);
    let mut writer = session().await;
    writer
        .batch_execute(&format!(
            "CREATE EXTENSION spine CASCADE; SET spine.vault_key_file = '{}'",
            old_keys.display()
        ))
        .await
        .unwrap();
    for i in 0..3 {
        create_secret(&writer, &format!("value-{i}"), &format!("rot-{i}")).await;
    }
    let reader = session().await;
    reader
        .batch_execute(&format!(
            "SET spine.vault_key_file = '{}'",
            old_keys.display()
        ))
        .await
        .unwrap();
    let read_all =
        "SELECT string_agg(decrypted_secret, ',' ORDER BY name) FROM vault.decrypted_secrets";

    writer
        .batch_execute(&format!(
            "SET spine.vault_key_file = '{}'",
            new_keys.display()
        ))
        .await
        .unwrap();
    let tx = writer.transaction().await.unwrap();
    let rotated: i64 = one(&tx, "SELECT spine.rotate_vault_key()", &[]).await;
    assert_eq!(rotated, 3);
    let during: String = one(&reader, read_all, &[]).await;
    assert_eq!(
        during, "value-0,value-1,value-2",
        "a reader during rotation"
    );
    tx.commit().await.unwrap();

    let versions: Vec<(i32, bool, i64)> = writer
        .query(
            "SELECT key_version, current, secrets FROM spine.vault_key_versions() ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(versions, [(1, false, 0), (2, true, 3)]);
    let after: String = one(&writer, read_all, &[]).await;
    assert_eq!(after, "value-0,value-1,value-2");
    let err = reader.query(read_all, &[]).await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        Some("55000"),
        "old keyring after rotation: {err:?}"
    );
    seal_audit(&writer).await;
    let audited: i64 = one(
        &writer,
        "SELECT count(*) FROM spine.audit_log WHERE action = 'vault.key_rotated' AND details->>'secrets' = '3'",
        &[],
    )
    .await;
    assert_eq!(audited, 1);
    assert_eq!(
        one::<Option<i64>>(&writer, "SELECT spine.audit_verify()", &[]).await,
        None
    );

    drop((writer, reader));
    admin
        .batch_execute(&format!("DROP DATABASE {dbname} WITH (FORCE)"))
        .await
        .unwrap();
    for f in [old_keys, new_keys] {
        std::fs::remove_file(f).unwrap();
    }
}

/// Where a `vault` schema already exists (supabase_vault on Supabase), CREATE
/// EXTENSION spine creates no vault objects and plugin_secrets reads that schema's
/// decrypted_secrets.
#[tokio::test]
async fn an_existing_vault_schema_is_used() {
    let admin = connect().await;
    let dbname = format!("spine_supavault_{}", Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {dbname}"))
        .await
        .unwrap();
    let url = database_url().replace("/spine", &format!("/{dbname}"));
    let (mut db, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    // Stands in for supabase_vault: its view with the columns Spine reads.
    db.batch_execute(
        "CREATE SCHEMA vault; \
         CREATE TABLE vault.store (name text, decrypted_secret text); \
         INSERT INTO vault.store VALUES ('TOKEN', 'from-supabase-vault'); \
         CREATE VIEW vault.decrypted_secrets AS SELECT name, decrypted_secret FROM vault.store; \
         CREATE EXTENSION spine CASCADE;",
    )
    .await
    .unwrap();
    let ours: Option<String> = one(
        &db,
        "SELECT to_regprocedure('vault.create_secret(text,text,text,uuid)')::text",
        &[],
    )
    .await;
    assert_eq!(ours, None);
    db.execute(
        "SELECT spine.register_plugin('{\"name\":\"sms\",\"version\":\"1.0.0\",\"permissions\":{\"secrets\":[\"TOKEN\"]}}')",
        &[],
    )
    .await
    .unwrap();
    let alice = Uuid::new_v4();
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", json!({"sub": alice.to_string()})).await;
    tx.execute("SELECT spine.grant_consent('sms', ARRAY['*'])", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "service_role", json!({"sub": alice.to_string()})).await;
    let secret: String = one(&tx, "SELECT secret FROM spine.plugin_secrets('sms')", &[]).await;
    assert_eq!(secret, "from-supabase-vault");
    let err = tx
        .query("SELECT spine.rotate_vault_key()", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("55000"));
    drop(tx);
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE {dbname} WITH (FORCE)"))
        .await
        .unwrap();
}

/// A user's own secrets (BYOK): stored as `<uid>/<NAME>`, listed by name only,
/// replaced and deleted by their owner, invisible to other users; bad input is a
/// clear error; every change is audited without the value.
#[tokio::test]
async fn users_keep_their_own_secrets() {
    let mut db = connect().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let as_user = async |db: &mut Client,
                         who: Option<Uuid>,
                         sql: &str,
                         params: &[&(dyn tokio_postgres::types::ToSql + Sync)]| {
        let tx = db.transaction().await.unwrap();
        let claims = who.map_or(
            json!({"role": "anon"}),
            |u| json!({"sub": u.to_string(), "role": "authenticated"}),
        );
        let role = if who.is_some() {
            "authenticated"
        } else {
            "anon"
        };
        act_as(&tx, role, claims).await;
        let out = tx.query(sql, params).await;
        if out.is_ok() {
            tx.commit().await.unwrap();
        }
        out
    };
    let set = "SELECT spine.set_my_secret($1, $2)";
    let first: Uuid = as_user(&mut db, Some(alice), set, &[&"OPENAI_KEY", &"sk-one"])
        .await
        .unwrap()[0]
        .get(0);
    let again: Uuid = as_user(&mut db, Some(alice), set, &[&"OPENAI_KEY", &"sk-two"])
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(first, again, "replaced in place");
    let stored: String = one(
        &db,
        "SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = $1",
        &[&format!("{alice}/OPENAI_KEY")],
    )
    .await;
    assert_eq!(stored, "sk-two");
    let names =
        |rows: Vec<tokio_postgres::Row>| -> Vec<String> { rows.iter().map(|r| r.get(0)).collect() };
    let list = "SELECT name FROM spine.my_secrets()";
    assert_eq!(
        names(as_user(&mut db, Some(alice), list, &[]).await.unwrap()),
        vec!["OPENAI_KEY"]
    );
    assert!(names(as_user(&mut db, Some(bob), list, &[]).await.unwrap()).is_empty());
    // Bob's delete of the same name is his own: nothing of alice's goes.
    let delete = "SELECT spine.delete_my_secret($1)";
    let removed: bool = as_user(&mut db, Some(bob), delete, &[&"OPENAI_KEY"])
        .await
        .unwrap()[0]
        .get(0);
    assert!(!removed);
    for (who, sql, name, value, state) in [
        (None, set, "OPENAI_KEY", Some("x"), "42501"),
        (Some(alice), set, "bad name", Some("x"), "22023"),
        (Some(alice), set, "../OTHER", Some("x"), "22023"),
        (Some(alice), set, "EMPTY", Some(""), "22023"),
        (Some(alice), set, "NULL", None, "22004"),
    ] {
        let err = as_user(&mut db, who, sql, &[&name, &value])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), Some(state), "{name}: {err:?}");
    }
    let err = as_user(&mut db, Some(alice), set, &[&"BIG", &"x".repeat(70_000)])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("54000"), "{err:?}");
    let removed: bool = as_user(&mut db, Some(alice), delete, &[&"OPENAI_KEY"])
        .await
        .unwrap()[0]
        .get(0);
    assert!(removed);
    assert!(names(as_user(&mut db, Some(alice), list, &[]).await.unwrap()).is_empty());
    seal_audit(&db).await;
    let audited: Vec<String> = column(
        &db,
        "SELECT action FROM spine.audit_log WHERE target = 'secret:' || $1::uuid::text ORDER BY seq",
        &[&first],
    )
    .await;
    assert_eq!(
        audited,
        vec![
            "vault.secret_created",
            "vault.secret_updated",
            "vault.secret_decrypted",
            "vault.secret_deleted"
        ],
        "the test read it back once, as service_role"
    );
    let leaked: i64 = one(
        &db,
        "SELECT count(*) FROM spine.audit_log WHERE details::text LIKE '%sk-two%' OR details::text LIKE '%sk-one%'",
        &[],
    )
    .await;
    assert_eq!(leaked, 0, "values never reach the audit log");
}
