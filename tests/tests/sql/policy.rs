//! Plugin policy against the real cluster, called the way PostgREST and the
//! function host call it: manifests, consents, `spine.authorize`/`require`, and the
//! audit rows every decision leaves.

use serde_json::json;
use spine_tests::{act_as, column, connect, one, seal_audit, sqlstate};
use tokio_postgres::Client;
use uuid::Uuid;

/// Registers a plugin with a fresh name declaring one secret, one host and one
/// event domain; returns its name.
async fn register(db: &Client) -> String {
    let name = format!("p{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT spine.register_plugin($1)",
        &[&json!({
            "name": name, "version": "1.0.0",
            "permissions": {
                "secrets": ["TOKEN"],
                "network": ["api.example.com"],
                "events": {"emit": ["sms.*"]},
                "entities": {"read": ["person"]}
            }
        })],
    )
    .await
    .unwrap();
    name
}

fn user(id: Uuid) -> serde_json::Value {
    json!({"sub": id.to_string(), "role": "authenticated"})
}

/// As PostgREST: a user grants consent for themselves.
async fn grant(db: &mut Client, who: Uuid, plugin: &str, scopes: &[&str]) -> i64 {
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", user(who)).await;
    let n: i64 = one(
        &tx,
        "SELECT spine.grant_consent($1, $2)",
        &[&plugin, &scopes],
    )
    .await;
    tx.commit().await.unwrap();
    n
}

/// As the function host: service_role, with the invoking user's claims.
async fn authorize(
    db: &mut Client,
    who: Option<Uuid>,
    plugin: &str,
    action: &str,
    resource: &str,
) -> bool {
    let tx = db.transaction().await.unwrap();
    let claims = who.map_or(json!({"role": "service_role"}), user);
    act_as(&tx, "service_role", claims).await;
    let allowed: bool = one(
        &tx,
        "SELECT spine.authorize('plugin:' || $1, $2, $3)",
        &[&plugin, &action, &resource],
    )
    .await;
    tx.commit().await.unwrap();
    allowed
}

/// Allowed exactly where the manifest declares AND this user consented; every
/// decision is audited with its reason, as the user it was made for.
#[tokio::test]
async fn plugin_acts_only_within_manifest_and_consent() {
    let mut db = connect().await;
    let p = register(&db).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        grant(&mut db, alice, &p, &["secrets.read:TOKEN", "events.emit:*"]).await,
        2
    );
    assert_eq!(
        grant(&mut db, alice, &p, &["secrets.read:TOKEN"]).await,
        0,
        "already granted"
    );

    assert!(authorize(&mut db, Some(alice), &p, "secrets.read", "TOKEN").await);
    assert!(authorize(&mut db, Some(alice), &p, "events.emit", "sms.MessageSent").await);
    assert!(
        !authorize(&mut db, Some(alice), &p, "events.emit", "mail.MessageSent").await,
        "not declared"
    );
    assert!(
        !authorize(&mut db, Some(alice), &p, "network.fetch", "api.example.com").await,
        "not consented"
    );
    assert!(
        !authorize(&mut db, Some(alice), &p, "secrets.read", "OTHER").await,
        "not declared"
    );
    assert!(
        !authorize(&mut db, Some(bob), &p, "secrets.read", "TOKEN").await,
        "bob did not consent"
    );
    // service_role without a user is a system job: the manifest is its bound.
    assert!(
        authorize(&mut db, None, &p, "secrets.read", "TOKEN").await,
        "service_role, declared"
    );
    assert!(
        !authorize(&mut db, None, &p, "secrets.read", "OTHER").await,
        "service_role, not declared"
    );
    // The function host asking for a caller that is neither a user nor service_role.
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "spine_functions", json!({"role": "anon"})).await;
    let anon: bool = one(
        &tx,
        "SELECT spine.authorize('plugin:' || $1, 'secrets.read', 'TOKEN')",
        &[&p],
    )
    .await;
    tx.commit().await.unwrap();
    assert!(!anon, "no user to act for");
    assert!(
        !authorize(
            &mut db,
            Some(alice),
            "nosuchplugin",
            "secrets.read",
            "TOKEN"
        )
        .await
    );

    seal_audit(&db).await;
    let rows = db
        .query(
            "SELECT action, actor, details->>'reason' FROM spine.audit_log \
             WHERE target = 'plugin:' || $1 AND action LIKE 'policy.%' ORDER BY seq",
            &[&p],
        )
        .await
        .unwrap();
    let summary: Vec<(String, Option<Uuid>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(summary.len(), 9, "{summary:#?}");
    assert_eq!(summary[0], ("policy.allowed".into(), Some(alice), None));
    assert!(
        summary[2]
            .2
            .as_deref()
            .unwrap()
            .contains("does not declare"),
        "{summary:#?}"
    );
    assert!(
        summary[3].2.as_deref().unwrap().contains("not consented"),
        "{summary:#?}"
    );
    assert_eq!(summary[5].1, Some(bob));
    assert_eq!(summary[6], ("policy.allowed".into(), None, None));
    assert!(
        summary[7]
            .2
            .as_deref()
            .unwrap()
            .contains("does not declare"),
        "{summary:#?}"
    );
    assert!(
        summary[8].2.as_deref().unwrap().contains("no user"),
        "{summary:#?}"
    );
}

/// Revoking, disabling the plugin, or a new manifest version that drops a
/// permission each end what a consent allowed.
#[tokio::test]
async fn revocation_disabling_and_manifest_updates_take_effect() {
    let mut db = connect().await;
    let p = register(&db).await;
    let alice = Uuid::new_v4();
    grant(&mut db, alice, &p, &["*"]).await;
    assert!(authorize(&mut db, Some(alice), &p, "network.fetch", "api.example.com").await);

    db.execute("SELECT spine.set_plugin_enabled($1, false)", &[&p])
        .await
        .unwrap();
    assert!(!authorize(&mut db, Some(alice), &p, "network.fetch", "api.example.com").await);
    db.execute("SELECT spine.set_plugin_enabled($1, true)", &[&p])
        .await
        .unwrap();
    assert!(authorize(&mut db, Some(alice), &p, "network.fetch", "api.example.com").await);

    db.execute(
        "SELECT spine.register_plugin($1)",
        &[&json!({"name": p, "version": "2.0.0", "permissions": {"secrets": ["TOKEN"]}})],
    )
    .await
    .unwrap();
    assert!(
        !authorize(&mut db, Some(alice), &p, "network.fetch", "api.example.com").await,
        "dropped by v2"
    );
    assert!(authorize(&mut db, Some(alice), &p, "secrets.read", "TOKEN").await);

    // A version asking for more gets nothing more from a `*` consent given before.
    db.execute(
        "SELECT spine.register_plugin($1)",
        &[&json!({"name": p, "version": "3.0.0", "permissions": {"secrets": ["TOKEN", "NEW"]}})],
    )
    .await
    .unwrap();
    assert!(
        !authorize(&mut db, Some(alice), &p, "secrets.read", "NEW").await,
        "added by v3"
    );

    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", user(alice)).await;
    let revoked: i64 = one(&tx, "SELECT spine.revoke_consent($1)", &[&p]).await;
    tx.commit().await.unwrap();
    assert_eq!(revoked, 4, "`*` was granted as the 4 scopes v1 declared");
    assert!(!authorize(&mut db, Some(alice), &p, "secrets.read", "TOKEN").await);

    seal_audit(&db).await;
    let actions: Vec<String> = column(
        &db,
        "SELECT action FROM spine.audit_log WHERE target = 'plugin:' || $1 \
             AND action NOT LIKE 'policy.%' ORDER BY seq",
        &[&p],
    )
    .await;
    assert_eq!(
        actions,
        [
            "plugin.registered",
            "consent.granted",
            "plugin.disabled",
            "plugin.enabled",
            "plugin.updated",
            "plugin.updated",
            "consent.revoked"
        ]
    );
}

/// Consents are the user's own: no granting for someone else, nothing outside the
/// manifest, bad scopes and unknown plugins are clear errors, and a user reads only
/// their own consents.
#[tokio::test]
async fn consent_errors_and_privacy() {
    let mut db = connect().await;
    let p = register(&db).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    grant(&mut db, bob, &p, &["secrets.read:TOKEN"]).await;

    let cases: [(&str, &str); 5] = [
        ("SELECT spine.grant_consent($1, ARRAY['secrets.read:TOKEN'], owner => '00000000-0000-0000-0000-000000000001')", "42501"),
        ("SELECT spine.grant_consent($1, ARRAY['secrets.read:OTHER'])", "42501"),
        ("SELECT spine.grant_consent($1, ARRAY['secrets.read'])", "22023"),
        ("SELECT spine.grant_consent($1, ARRAY['db.drop:x'])", "22023"),
        ("SELECT spine.grant_consent($1 || 'x', ARRAY['*'])", "42704"),
    ];
    for (sql, code) in cases {
        let tx = db.transaction().await.unwrap();
        act_as(&tx, "authenticated", user(alice)).await;
        let err = tx.execute(sql, &[&p]).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some(code), "{sql}: {err:?}");
        tx.rollback().await.unwrap();
    }

    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", user(alice)).await;
    let visible: i64 = one(
        &tx,
        "SELECT count(*) FROM spine.consents WHERE plugin = $1",
        &[&p],
    )
    .await;
    assert_eq!(visible, 0, "alice sees bob's consent");
    let err = tx
        .execute(
            "SELECT spine.authorize('plugin:' || $1, 'secrets.read', 'TOKEN')",
            &[&p],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"), "users do not call authorize");
    tx.rollback().await.unwrap();

    let tx = db.transaction().await.unwrap();
    act_as(&tx, "anon", json!({"role": "anon"})).await;
    let err = tx
        .execute("SELECT spine.grant_consent($1, ARRAY['*'])", &[&p])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"));
    tx.rollback().await.unwrap();

    // service_role may act for a user (e.g. an admin tool), and it is recorded.
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "service_role", json!({"role": "service_role"})).await;
    let n: i64 = one(
        &tx,
        "SELECT spine.grant_consent($1, ARRAY['secrets.read:TOKEN'], owner => $2)",
        &[&p, &alice],
    )
    .await;
    tx.commit().await.unwrap();
    assert_eq!(n, 1);
}

/// `require` raises 42501 with the reason; bad principals, actions, resources and
/// manifests are 22023; registering is for service_role only.
#[tokio::test]
async fn bad_input_and_raising_variant() {
    let mut db = connect().await;
    let p = register(&db).await;
    let alice = Uuid::new_v4();
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "service_role", user(alice)).await;
    let err = tx
        .execute(
            "SELECT spine.require('plugin:' || $1, 'secrets.read', 'TOKEN')",
            &[&p],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"));
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("has not consented"),
        "{err:?}"
    );
    tx.rollback().await.unwrap();

    for (sql, code) in [
        ("SELECT spine.authorize('user:x', 'secrets.read', 'TOKEN')", "22023"),
        ("SELECT spine.authorize('plugin:x', 'db.drop', 'x')", "22023"),
        ("SELECT spine.authorize('plugin:x', 'network.fetch', 'https://evil.org/')", "22023"),
        ("SELECT spine.register_plugin('{\"name\": \"x\"}')", "22023"),
        ("SELECT spine.register_plugin('{\"name\": \"x\", \"version\": \"1.0.0\", \"permissions\": {\"network\": [\"*\"]}}')", "22023"),
        ("SELECT spine.set_plugin_enabled('no-such-plugin', true)", "42704"),
        ("SELECT spine.require('plugin:x', 'secrets.read', NULL)", "22004"),
        ("SELECT spine.authorize(NULL, 'secrets.read', 'x')", "22004"),
        ("SELECT spine.grant_consent('x', NULL)", "22004"),
        ("SELECT spine.grant_consent('x', ARRAY['*', NULL])", "22004"),
        ("SELECT spine.register_plugin(NULL)", "22004"),
    ] {
        let err = db.execute(sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), Some(code), "{sql}: {err:?}");
    }
    let tx = db.transaction().await.unwrap();
    act_as(&tx, "authenticated", user(alice)).await;
    let err = tx
        .execute(
            "SELECT spine.register_plugin('{\"name\": \"mine\", \"version\": \"1.0.0\"}')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("42501"));
}
