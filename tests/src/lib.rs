//! The harness every integration test and benchmark uses. The tests run against
//! the dev stack that `cargo xtask test` starts (or `cargo xtask up` +
//! `eval "$(cargo xtask env)"`).
//!
//! - this file: connecting (the stack's URL and TLS root), acting as a role,
//!   sinks, small query helpers;
//! - [`daemons`]: nats-server, Meilisearch, spine-worker and a recording HTTP hook,
//!   started for one test;
//! - [`proc`]: free ports, waiting, child processes (kill -9, restart);
//! - [`stack`]: stopping and starting the stack's Postgres;
//! - [`cluster`]: a Postgres installation and cluster of a test's own.

pub mod cluster;
pub mod daemons;
pub mod nats_cluster;
pub mod proc;
pub mod stack;

use tokio_postgres::{Client, NoTls};

/// The stack's `DATABASE_URL`. Tests fail loudly without it: skipping silently
/// would report a green run that checked nothing.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run `cargo xtask test`, or `cargo xtask up` and \
         `eval \"$(cargo xtask env)\"` before `cargo test`",
    )
}

/// The CA file that signed the stack's Postgres certificate (for `localhost` and
/// `127.0.0.1`): `sslmode=verify-full&sslrootcert=<this>` verifies the server.
pub fn pg_sslrootcert() -> String {
    std::env::var("SPINE_PG_SSLROOTCERT").expect(
        "SPINE_PG_SSLROOTCERT is not set: run `cargo xtask test`, or `cargo xtask up` and \
         `eval \"$(cargo xtask env)\"` before `cargo test`",
    )
}

/// A new connection as the superuser, like an admin's psql or PostgREST's
/// authenticator before it switches role.
pub async fn connect() -> Client {
    connect_to(&database_url())
        .await
        .expect("connect to the dev stack's Postgres")
}

/// A new connection to `url`, its connection driven in the background.
pub async fn connect_to(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection error: {e}");
        }
    });
    Ok(client)
}

/// What PostgREST does at the start of each request: inside the transaction,
/// switch to the JWT's role and expose its claims to SQL.
pub async fn act_as(tx: &tokio_postgres::Transaction<'_>, role: &str, claims: serde_json::Value) {
    tx.batch_execute(&format!("SET LOCAL ROLE {role}"))
        .await
        .expect("SET LOCAL ROLE");
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&claims.to_string()],
    )
    .await
    .expect("set request.jwt.claims");
}

/// The SQLSTATE of a failed statement, for asserting on error classes.
pub fn sqlstate(err: &tokio_postgres::Error) -> Option<&str> {
    err.code().map(|c| c.code())
}

/// A sink's row of `spine.sink_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkStatus {
    pub cursor: (i64, i64),
    pub backlog: i64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
}

/// A new sink starting at the current head of the outbox, so only events emitted
/// after it count (other tests share the database). Drop it with [`drop_sink`].
pub async fn fresh_sink(db: &Client) -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    db.execute("SELECT spine.ensure_sink($1, 'test', false)", &[&name])
        .await
        .expect("ensure_sink");
    name
}

pub async fn drop_sink(db: &Client, sink: &str) {
    db.execute("SELECT spine.drop_sink($1)", &[&sink])
        .await
        .expect("drop_sink");
}

pub async fn sink_status(db: &Client, sink: &str) -> SinkStatus {
    let r = db
        .query_one(
            "SELECT cursor_commit_seq, cursor_seq, backlog, lag_seconds, last_error \
             FROM spine.sink_status WHERE name = $1",
            &[&sink],
        )
        .await
        .expect("sink_status row");
    SinkStatus {
        cursor: (r.get(0), r.get(1)),
        backlog: r.get(2),
        lag_seconds: r.get(3),
        last_error: r.get(4),
    }
}

/// The first column of every row of a query (panics with the SQL on error).
pub async fn column<T>(
    db: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    db.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The single value of a one-row, one-column query (panics with the SQL otherwise).
pub async fn one<T>(
    db: &impl tokio_postgres::GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    db.query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Appends every committed audit row still waiting for a sealer to the chain
/// (a commit that found the chain's head busy leaves its rows to the next sealer),
/// so a test can look for its rows in `spine.audit_log`.
pub async fn seal_audit(db: &impl tokio_postgres::GenericClient) {
    db.execute("SELECT spine.audit_seal()", &[])
        .await
        .expect("spine.audit_seal()");
}

/// Runs `f` in a transaction as the `authenticated` user `user` (as PostgREST
/// would for their request) and commits.
pub async fn as_user<T>(
    db: &mut Client,
    user: uuid::Uuid,
    f: impl AsyncFnOnce(&tokio_postgres::Transaction<'_>) -> T,
) -> T {
    let tx = db.transaction().await.expect("begin");
    act_as(
        &tx,
        "authenticated",
        serde_json::json!({"sub": user.to_string(), "role": "authenticated"}),
    )
    .await;
    let out = f(&tx).await;
    tx.commit().await.expect("commit");
    out
}

/// A connection LISTENing on `channel`; the payloads of the notifications it
/// receives arrive on the returned channel, in order.
pub async fn listen(channel: &str) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use futures_util::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .expect("connect to the dev stack's Postgres");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                if tx.send(n.payload().to_string()).is_err() {
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{}\"", channel.replace('"', "\"\"")))
        .await
        .expect("LISTEN");
    (client, rx)
}

/// The notifications that arrive on `rx` within `window` from now, in order.
pub async fn received_within(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    window: std::time::Duration,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(Some(payload)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        got.push(payload);
    }
    got
}

/// The plans auto_explain logs for the statements that `sql` runs, including those
/// inside functions, on a new connection: a function plans afresh there, over the
/// table as it is now (in the test database: small).
pub async fn logged_plans(
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<String> {
    let (db, mut connection) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .unwrap();
    let (logs_tx, mut logs) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notice(notice)) = message {
                let _ = logs_tx.send(notice.message().to_string());
            }
        }
    });
    db.batch_execute(
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
         SET auto_explain.log_nested_statements = on; SET client_min_messages = log",
    )
    .await
    .unwrap();
    db.query(sql, params).await.unwrap();
    drop(db);
    reader.await.unwrap();
    let mut plans = Vec::new();
    while let Ok(log) = logs.try_recv() {
        plans.push(log);
    }
    plans
}

/// The logged plan of the statement whose text contains `marker`.
pub fn plan_of<'a>(plans: &'a [String], marker: &str) -> &'a str {
    plans
        .iter()
        .find(|p| p.contains(marker))
        .unwrap_or_else(|| panic!("no logged plan contains {marker:?}: {plans:#?}"))
}

/// A log written with `SPINE_LOG_FORMAT=json`: each line as JSON, failing on
/// a line that is not.
pub fn json_log_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
