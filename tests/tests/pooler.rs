//! Spine behind PgBouncer (Debian's), run the way `docs/deploy.md` says, on a
//! cluster of its own ([`spine_tests::cluster`]):
//!
//! - **Applications in transaction mode.** Sixteen clients, two server sessions:
//!   each transaction of one client runs on a session another client's
//!   transactions used before. Every transaction sets its user the way PostgREST
//!   and the gateway do (`set_config(…, true)`, `SET LOCAL ROLE`) and calls
//!   `spine.emit`, `spine.enqueue` and `spine.upsert_entity`. Nothing a Spine
//!   function or a request sets outlives its transaction: each transaction starts
//!   with no claims and the pool's own role, and every row has its caller's owner.
//! - **The worker in session mode.** The relay, connected through the pooler's
//!   session pool (its LISTEN and its sink's advisory lock need a session of
//!   their own), delivers every event once, in commit order.

use spine_tests::cluster::{
    assert_outbox_delivered_once_in_order, new_database, repo_root, sink_drained,
    system_extension_files, Installation,
};
use spine_tests::daemons::{Nats, Worker};
use spine_tests::proc::tempdir::TempDir;
use spine_tests::proc::Daemon;
use spine_tests::{connect_to, one};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;
use uuid::Uuid;

const SINK: &str = "pooler_relay";
const CLIENTS: usize = 16;
const TRANSACTIONS: usize = 25;

/// Debian installs PgBouncer in /usr/sbin, which a test's PATH may not have.
fn pgbouncer_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|bin| bin.is_file())
        .expect("pgbouncer is installed (`cargo xtask setup`)")
}

/// PgBouncer in front of `postgres_port`: database `spine_tx` in transaction
/// mode with two server sessions, `spine_session` in session mode.
fn pgbouncer(dir: &Path, postgres_port: u16) -> Daemon {
    let users = dir.join("users.txt");
    std::fs::write(&users, "\"postgres\" \"\"\n").unwrap();
    let config = dir.join("pgbouncer.ini");
    // It refuses to run as root: it switches to postgres (-u), who must read these.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (bin, config_path) = (pgbouncer_binary(), config.clone());
    Daemon::start("pgbouncer", Duration::from_secs(10), move |port| {
        std::fs::write(
            &config_path,
            format!(
                "[databases]\n\
                 spine_tx = host=127.0.0.1 port={postgres_port} dbname=spine pool_mode=transaction pool_size=2\n\
                 spine_session = host=127.0.0.1 port={postgres_port} dbname=spine pool_mode=session pool_size=10\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {}\n\
                 max_client_conn = 100\n",
                users.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-u").arg("postgres").arg(&config_path);
        cmd
    })
}

/// The values of the rows a simple query returned, in order.
fn values(messages: &[SimpleQueryMessage]) -> Vec<Option<String>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_works_behind_pgbouncer() {
    let tmp = TempDir::new();
    let inst = Installation::new(tmp.path());
    inst.install_extension(&system_extension_files());
    let (cluster, _) = new_database(&inst, "pooler", &repo_root().join("migrations"), &[]);
    let direct = connect_to(&cluster.url("spine")).await.unwrap();
    direct
        .batch_execute("SELECT spine.create_queue('pooled', user_enqueue => true)")
        .await
        .unwrap();
    let bouncer_dir = tmp.path().join("pgbouncer");
    std::fs::create_dir_all(&bouncer_dir).unwrap();
    let bouncer = pgbouncer(&bouncer_dir, cluster.port);
    let via = |db: &str| format!("postgres://postgres@127.0.0.1:{}/{db}", bouncer.port);

    // Transaction mode: the simple query protocol, as psql and PostgREST without
    // prepared statements use it through such a pool.
    let users: Vec<Uuid> = (0..CLIENTS).map(|_| Uuid::new_v4()).collect();
    let mut clients = Vec::new();
    for user in users.clone() {
        let url = via("spine_tx");
        clients.push(tokio::spawn(async move {
            let db = connect_to(&url).await.unwrap();
            let mut starts = Vec::new();
            let mut backends = std::collections::BTreeSet::new();
            for n in 0..TRANSACTIONS {
                let claims = serde_json::json!({"sub": user, "role": "authenticated"});
                let out = db
                    .simple_query(&format!(
                        "BEGIN; \
                         SELECT coalesce(current_setting('request.jwt.claims', true), '') \
                                || '|' || current_user; \
                         SELECT pg_backend_pid()::text; \
                         SELECT set_config('request.jwt.claims', '{claims}', true); \
                         SET LOCAL ROLE authenticated; \
                         SELECT spine.emit('pool.Noted', jsonb_build_object('n', {n}))::text; \
                         SELECT spine.enqueue('pooled', jsonb_build_object('n', {n}))::text; \
                         SELECT spine.upsert_entity('note', jsonb_build_object('n', {n}))::text; \
                         COMMIT;"
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("a pooled transaction failed: {e:?}"));
                let rows = values(&out);
                starts.push(rows[0].clone().unwrap_or_default());
                backends.insert(rows[1].clone().unwrap_or_default());
            }
            (starts, backends)
        }));
    }
    let mut backends = std::collections::BTreeSet::new();
    for client in clients {
        let (starts, seen) = client.await.unwrap();
        // No claims and the pool's own role: nothing the previous transaction on
        // this server session set survived it.
        assert!(
            starts.iter().all(|s| s == "|postgres"),
            "a transaction began with another one's settings: {starts:?}"
        );
        backends.extend(seen);
    }
    assert!(
        backends.len() <= 2,
        "sixteen clients shared the pool's two server sessions: {backends:?}"
    );
    for table in [
        "(SELECT owner_id FROM spine.events WHERE type = 'pool.Noted')",
        "spine.jobs",
        "spine.entities",
    ] {
        let per_owner: Vec<i64> = spine_tests::column(
            &direct,
            &format!(
                "SELECT count(t.owner_id) FROM unnest($1::uuid[]) u(id) \
                   LEFT JOIN {table} t ON t.owner_id = u.id GROUP BY u.id"
            ),
            &[&users],
        )
        .await;
        assert_eq!(
            per_owner,
            vec![TRANSACTIONS as i64; CLIENTS],
            "{table}: each user's rows, each with its caller as owner"
        );
    }

    // Session mode: the relay through the pooler delivers every event once, in order.
    let nats = Nats::start();
    let _relay = Worker::start(
        SINK,
        &nats.url(),
        &[("DATABASE_URL", &via("spine_session"))],
    );
    sink_drained(&cluster.url("spine"), SINK).await;
    let through_pool: i64 = one(
        &direct,
        "SELECT count(*) FROM pg_stat_activity \
          WHERE application_name LIKE 'spine-worker/%' AND datname = 'spine'",
        &[],
    )
    .await;
    assert!(through_pool > 0, "the worker's sessions are there");
    // Events written while it runs follow.
    direct
        .batch_execute("SELECT spine.emit('pool.Appended', '{}') FROM generate_series(1, 10)")
        .await
        .unwrap();
    sink_drained(&cluster.url("spine"), SINK).await;
    assert_outbox_delivered_once_in_order(&direct, &nats).await;
}
