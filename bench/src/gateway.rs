//! `gateway`: what the gateway costs over the same SQL sent directly. Side by
//! side in one run: an RPC round trip (`POST /rest/v1/rpc/bench_gw_add` as a
//! signed-in user) against `SELECT bench_gw_add($1, $2)` prepared on a
//! tokio-postgres connection, at 1 and at 8 clients; a 100-row table read
//! (`GET /rest/v1/bench_gw?order=id`) against the same rows as JSON by SQL; and
//! password sign-ins per second (bcrypt cost 10 dominates).

use crate::stats::{per_second, quantile};
use serde_json::json;
use spine_tests::proc::{free_port, ChildGuard as Guard};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Settings {
    /// The database, with the extension (the dev stack's).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "DATABASE_URL"
    )]
    pub database_url: String,
    /// The spine-gateway binary to run (cargo xtask bench passes the release build).
    #[arg(long, env = "SPINE_GATEWAY_BIN", value_name = "SPINE_GATEWAY_BIN")]
    pub gateway_bin: String,
    /// The project's JWT secret.
    #[arg(
        long,
        env = "SPINE_JWT_SECRET",
        hide_env_values = true,
        value_name = "SPINE_JWT_SECRET"
    )]
    pub jwt_secret: String,
    /// Requests per client per figure.
    #[arg(
        long,
        env = "SPINE_BENCH_CALLS",
        default_value_t = 2_000,
        value_name = "N"
    )]
    pub calls: usize,
}

/// The statement the gateway sends for `POST /rest/v1/rpc/bench_gw_add`
/// (gateway/src/rest/handlers.rs): the arguments through jsonb_to_record.
const GATEWAY_RPC_SQL: &str =
    "SELECT to_json(\"public\".\"bench_gw_add\"(\"a\" := _a.\"a\", \"b\" := _a.\"b\"))::text \
     FROM jsonb_to_record(CAST($1::text AS jsonb)) AS _a(\"a\" integer, \"b\" integer)";

/// The statement the gateway opens each request with (gateway/src/request.rs).
const CONTEXT_SQL: &str = "SELECT set_config('search_path', $1, true), \
     set_config('role', $2, true), set_config('request.jwt.claims', $3, true), \
     set_config('request.method', $4, true), set_config('request.path', $5, true), \
     set_config('request.headers', $6, true)";

const SETUP: &str = "
    CREATE TABLE IF NOT EXISTS public.bench_gw (id int PRIMARY KEY, name text NOT NULL, n int NOT NULL);
    INSERT INTO public.bench_gw SELECT g, 'row ' || g, g * 7 FROM generate_series(1, 100) g ON CONFLICT DO NOTHING;
    GRANT SELECT ON public.bench_gw TO authenticated;
    CREATE OR REPLACE FUNCTION public.bench_gw_add(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT a + b';
    GRANT EXECUTE ON FUNCTION public.bench_gw_add(int, int) TO authenticated;";

/// (p50, p99, requests/s) of `clients` tasks each running `op` `calls` times.
async fn measure<F, Fut>(
    clients: usize,
    calls: usize,
    op: F,
) -> anyhow::Result<(Duration, Duration, f64)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                op(c).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = per_second(all.len(), started.elapsed());
    Ok((quantile(&mut all, 0.5), quantile(&mut all, 0.99), rate))
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn row(label: &str, (p50, p99, rate): (Duration, Duration, f64)) {
    println!("{label:<44} {:>9} {:>9} {:>10.0}", ms(p50), ms(p99), rate);
}

pub async fn run(s: Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = spine_tests::connect_to(&s.database_url).await?;
    db.batch_execute(SETUP).await?;
    let port = free_port();
    let _gateway = Guard(
        Command::new(&s.gateway_bin)
            .env("DATABASE_URL", &s.database_url)
            .env("SPINE_JWT_SECRET", &s.jwt_secret)
            .env("SPINE_GATEWAY_ADDR", format!("127.0.0.1:{port}"))
            .env("SPINE_AUTH_SIGN_IN_LIMIT", "100000/1")
            .env("SPINE_AUTH_SIGN_UP_LIMIT", "100000/1")
            .env("RUST_LOG", "warn")
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "spine-gateway did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let user = uuid::Uuid::new_v4().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = spine_functions::jwt::sign(
        &json!({"sub": user, "role": "authenticated", "iat": now, "exp": now + 3600}),
        s.jwt_secret.as_bytes(),
    );
    let auth = format!("Bearer {token}");
    println!(
        "gateway benchmark: {} requests per client per figure, keep-alive HTTP/1.1, release build\n",
        s.calls
    );
    println!("{:<44} {:>9} {:>9} {:>10}", "", "p50 ms", "p99 ms", "per s");

    // Direct SQL: one connection per client, the statement prepared once.
    let direct = |sql: &'static str, clients: usize| {
        let url = s.database_url.clone();
        async move {
            let mut conns = Vec::new();
            for _ in 0..clients {
                let c = spine_tests::connect_to(&url).await?;
                let st = c.prepare(sql).await?;
                conns.push(std::sync::Arc::new((c, st)));
            }
            Ok::<_, anyhow::Error>(conns)
        }
    };
    let rpc_sql = "SELECT public.bench_gw_add($1, $2)";
    let read_sql = "SELECT coalesce(json_agg(t), '[]')::text FROM (SELECT * FROM public.bench_gw ORDER BY id) t";
    let mut results = Vec::new();
    for clients in [1usize, 8] {
        let conns = direct(rpc_sql, clients).await?;
        let sql = measure(clients, s.calls, move |c| {
            let conn = conns[c].clone();
            async move {
                let v: i32 = conn.0.query_one(&conn.1, &[&1i32, &2i32]).await?.get(0);
                anyhow::ensure!(v == 3);
                Ok(())
            }
        })
        .await?;
        row(
            &format!("RPC, direct SQL (prepared), {clients} client(s)"),
            sql,
        );
        // The limit: the transaction the gateway runs (PostgREST's contract),
        // by hand on tokio-postgres, pipelined: BEGIN, the set_config of the
        // request's GUCs, the gateway's own statement, COMMIT.
        let mut hand_conns = Vec::new();
        for _ in 0..clients {
            let c = spine_tests::connect_to(&s.database_url).await?;
            let set = c.prepare(CONTEXT_SQL).await?;
            let call = c.prepare(GATEWAY_RPC_SQL).await?;
            hand_conns.push(std::sync::Arc::new((c, set, call)));
        }
        let claims = json!({"sub": user, "role": "authenticated"}).to_string();
        let by_hand = measure(clients, s.calls, move |c| {
            let conn = hand_conns[c].clone();
            let claims = claims.clone();
            async move {
                let (client, set, call) = (&conn.0, &conn.1, &conn.2);
                let search_path = "\"public\", public, extensions".to_string();
                let (role, method, headers) = ("authenticated", "POST", "{}");
                let path = "/rest/v1/rpc/bench_gw_add";
                let gucs: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                    [&search_path, &role, &claims, &method, &path, &headers];
                let (b, g, v, e) = tokio::join!(
                    client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
                    client.query_one(set, &gucs),
                    client.query_one(call, &[&r#"{"a": 1, "b": 2}"#]),
                    client.batch_execute("COMMIT"),
                );
                b?;
                g?;
                e?;
                anyhow::ensure!(v?.get::<_, String>(0) == "3");
                Ok(())
            }
        })
        .await?;
        row(
            &format!("RPC, the same transaction by hand, {clients} client(s)"),
            by_hand,
        );
        let (http, url, bearer) = (client.clone(), base.clone(), auth.clone());
        let gw = measure(clients, s.calls, move |_| {
            let (client, base, auth) = (http.clone(), url.clone(), bearer.clone());
            async move {
                let r = client
                    .post(format!("{base}/rest/v1/rpc/bench_gw_add"))
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(r#"{"a": 1, "b": 2}"#)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "status {}", r.status());
                anyhow::ensure!(r.bytes().await?.as_ref() == b"3");
                Ok(())
            }
        })
        .await?;
        row(&format!("RPC, gateway, {clients} client(s)"), gw);
        // The HTTP floor on this machine: the same client, a route that does
        // no database work and no token check.
        let (client, base) = (client.clone(), base.clone());
        let floor = measure(clients, s.calls, move |_| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let r = client.get(format!("{base}/health/live")).send().await?;
                anyhow::ensure!(r.status() == 200);
                r.bytes().await?;
                Ok(())
            }
        })
        .await?;
        row(
            &format!("GET /health/live (HTTP only), {clients} client(s)"),
            floor,
        );
        results.push((clients, sql, by_hand, gw));
    }
    let conns = direct(read_sql, 1).await?;
    let sql_read = measure(1, s.calls, move |_| {
        let conn = conns[0].clone();
        async move {
            let body: String = conn.0.query_one(&conn.1, &[]).await?.get(0);
            anyhow::ensure!(body.len() > 1000);
            Ok(())
        }
    })
    .await?;
    row("100-row read, direct SQL as JSON", sql_read);
    let gw_read = {
        let (client, base, auth) = (client.clone(), base.clone(), auth.clone());
        measure(1, s.calls, move |_| {
            let (client, base, auth) = (client.clone(), base.clone(), auth.clone());
            async move {
                let r = client
                    .get(format!("{base}/rest/v1/bench_gw?order=id"))
                    .header("authorization", &auth)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "status {}", r.status());
                anyhow::ensure!(r.bytes().await?.len() > 1000);
                Ok(())
            }
        })
        .await?
    };
    row("100-row read, gateway", gw_read);

    // Sign-ins: one user signed up, then signed in again and again.
    let email = format!("bench-{}@example.test", uuid::Uuid::new_v4());
    let creds = json!({"email": email, "password": "bench password"}).to_string();
    let r = client
        .post(format!("{base}/auth/v1/signup"))
        .header("content-type", "application/json")
        .body(creds.clone())
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "sign-up: {}", r.status());
    let sign_ins = (s.calls / 20).max(20);
    let sign_in = {
        let (client, base) = (client.clone(), base.clone());
        measure(2, sign_ins / 2, move |_| {
            let (client, base, creds) = (client.clone(), base.clone(), creds.clone());
            async move {
                let r = client
                    .post(format!("{base}/auth/v1/token?grant_type=password"))
                    .header("content-type", "application/json")
                    .body(creds)
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "sign-in: {}", r.status());
                Ok(())
            }
        })
        .await?
    };
    row("password sign-in (bcrypt cost 10), 2 clients", sign_in);

    println!();
    let (_, sql1, hand1, gw1) = results[0];
    let (_, sql8, hand8, gw8) = results[1];
    let overhead = gw1.0.saturating_sub(sql1.0);
    println!(
        "RPC p50 overhead at 1 client: {} ms over direct SQL (goal < 0.5 ms)",
        ms(overhead)
    );
    println!(
        "RPC throughput at 8 clients: {:.0}% of direct SQL (goal >= 50%); \
         the same transaction by hand: {:.0}% of direct SQL; gateway / by hand: {:.0}%",
        100.0 * gw8.2 / sql8.2,
        100.0 * hand8.2 / sql8.2,
        100.0 * gw8.2 / hand8.2
    );
    println!(
        "RPC p50 at 1 client: direct {} ms, by hand {} ms, gateway {} ms",
        ms(sql1.0),
        ms(hand1.0),
        ms(gw1.0)
    );
    println!(
        "100-row read: gateway p50 {} ms, direct {} ms ({:.2}x)",
        ms(gw_read.0),
        ms(sql_read.0),
        gw_read.0.as_secs_f64() / sql_read.0.as_secs_f64()
    );
    Ok(())
}
