//! `spine-assistant`: a personal assistant in the terminal, on Spine's
//! gateway only — `/auth/v1` for the session, `/rest/v1` for memories,
//! keys, settings and routing, `/functions/v1` for the skills, whose answers
//! stream in as they are made. See examples/assistant/README.md.

mod api;
mod ask;
mod session;

use anyhow::{Context, Result};
use api::Api;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use session::Auth;
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "spine-assistant",
    version,
    about = "A personal assistant on Spine"
)]
struct Cli {
    /// The project's URL (the gateway; Supabase's SUPABASE_URL).
    #[arg(long, env = "SPINE_URL", default_value = "http://127.0.0.1:54396")]
    url: String,
    /// The project's anon key.
    #[arg(long, env = "SPINE_ANON_KEY", hide_env_values = true)]
    anon_key: String,
    /// Where the session is kept [default: $XDG_CONFIG_HOME/spine-assistant/session.json].
    #[arg(long, env = "SPINE_ASSISTANT_SESSION")]
    session: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account and sign in.
    Signup {
        #[arg(long)]
        email: String,
        /// The password (or set SPINE_ASSISTANT_PASSWORD, kept out of `ps`).
        #[arg(long, env = "SPINE_ASSISTANT_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Sign in; the session is kept until `logout`.
    Login {
        #[arg(long)]
        email: String,
        #[arg(long, env = "SPINE_ASSISTANT_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Sign out and forget the session.
    Logout,
    /// Who the session is for.
    Whoami,
    /// Remember something (a memory, embedded for recall).
    Remember { text: Vec<String> },
    /// The memories nearest in meaning to a query.
    Recall {
        query: Vec<String>,
        #[arg(short, default_value_t = 3)]
        k: u32,
    },
    /// Ask: routed to a skill, its thoughts and answer streamed.
    Ask {
        question: Vec<String>,
        /// Use this skill, whatever the routing says.
        #[arg(long)]
        skill: Option<String>,
    },
    /// Your own keys for the skills' providers (kept in the vault).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Where your providers are.
    Settings {
        #[arg(long)]
        llm_url: Option<String>,
        #[arg(long)]
        llm_model: Option<String>,
        #[arg(long)]
        weather_url: Option<String>,
    },
    /// The skills, your routing weights and flags; `enable` consents to one.
    Skills {
        #[command(subcommand)]
        command: Option<SkillsCommand>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Store a key; the value from stdin when not given (kept out of `ps`).
    Set {
        name: String,
        value: Option<String>,
    },
    /// The names of your keys.
    List,
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum SkillsCommand {
    /// Let a skill do what its manifest declares, for you (your consent).
    Enable { name: String },
}

fn joined(words: &[String], what: &str) -> Result<String> {
    let text = words.join(" ");
    anyhow::ensure!(!text.trim().is_empty(), "say what to {what}");
    Ok(text)
}

async fn run(cli: Cli) -> Result<()> {
    let session_file = cli.session.clone().unwrap_or_else(session::default_path);
    let http = reqwest::Client::new();
    let auth = Auth {
        http: &http,
        url: &cli.url,
        anon_key: &cli.anon_key,
    };
    // One client (one connection pool, one TLS setup) for auth and the API.
    let connect = || {
        Api::connect(
            http.clone(),
            cli.url.clone(),
            cli.anon_key.clone(),
            &session_file,
        )
    };
    match &cli.command {
        Command::Signup { email, password } => {
            let s = auth.sign_up(email, password).await?;
            s.save(&session_file)?;
            println!("signed up as {} ({})", s.email, s.user_id);
        }
        Command::Login { email, password } => {
            let s = auth.sign_in(email, password).await?;
            s.save(&session_file)?;
            println!("signed in as {} ({})", s.email, s.user_id);
        }
        Command::Logout => {
            if let Ok(s) = session::Session::load(&session_file) {
                auth.sign_out(&s).await?;
            }
            let _ = std::fs::remove_file(&session_file);
            println!("signed out");
        }
        Command::Whoami => {
            let api = connect().await?;
            println!("{} ({})", api.session.email, api.session.user_id);
        }
        Command::Remember { text } => {
            let api = connect().await?;
            let text = joined(text, "remember")?;
            let id = api
                .rpc(
                    "spine",
                    "upsert_entity",
                    json!({"kind": "memory", "data": {"text": text}}),
                )
                .await?;
            println!("remembered {}", id.as_str().unwrap_or_default());
        }
        Command::Recall { query, k } => {
            let api = connect().await?;
            let memories = ask::recall(&api, &joined(query, "recall")?, *k).await?;
            if memories.is_empty() {
                println!("nothing recalled (memories are searchable once embedded)");
            }
            for m in memories {
                println!(
                    "{:.3}  {}",
                    m["distance"].as_f64().unwrap_or(f64::NAN),
                    m["text"].as_str().unwrap_or_default()
                );
            }
        }
        Command::Ask { question, skill } => {
            let api = connect().await?;
            ask::ask(&api, &joined(question, "ask")?, skill.as_deref()).await?;
        }
        Command::Key(command) => {
            let api = connect().await?;
            match command {
                KeyCommand::Set { name, value } => {
                    let value = match value {
                        Some(v) => v.clone(),
                        None => {
                            let mut v = String::new();
                            std::io::stdin().read_to_string(&mut v)?;
                            v.trim_end_matches(['\r', '\n']).to_string()
                        }
                    };
                    api.rpc(
                        "spine",
                        "set_my_secret",
                        json!({"name": name, "value": value}),
                    )
                    .await?;
                    println!("stored {name} in your vault");
                }
                KeyCommand::List => {
                    for s in api
                        .rpc("spine", "my_secrets", json!({}))
                        .await?
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        println!("{}", s["name"].as_str().unwrap_or_default());
                    }
                }
                KeyCommand::Delete { name } => {
                    let gone = api
                        .rpc("spine", "delete_my_secret", json!({"name": name}))
                        .await?;
                    println!(
                        "{}",
                        if gone == true {
                            "deleted"
                        } else {
                            "there was none"
                        }
                    );
                }
            }
        }
        Command::Settings {
            llm_url,
            llm_model,
            weather_url,
        } => {
            let api = connect().await?;
            let mut row = json!({"owner_id": api.session.user_id});
            for (column, value) in [
                ("llm_url", llm_url),
                ("llm_model", llm_model),
                ("weather_url", weather_url),
            ] {
                if let Some(v) = value {
                    row[column] = json!(v);
                }
            }
            api.insert("assistant_settings", row, Some("owner_id"))
                .await?;
            let rows = api
                .select("public", "assistant_settings", "select=*")
                .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&rows.first().cloned().unwrap_or(Value::Null))?
            );
        }
        Command::Skills { command: None } => {
            let api = connect().await?;
            let skills = api
                .select("public", "assistant_skills", "select=*&order=name")
                .await?;
            let routing = api.select("public", "skill_routing", "select=*").await?;
            for s in skills {
                let name = s["name"].as_str().unwrap_or_default();
                let r = routing.iter().find(|r| r["skill"] == name);
                let weight = r.and_then(|r| r["weight"].as_f64()).unwrap_or(1.0);
                let uses = r.and_then(|r| r["uses"].as_i64()).unwrap_or(0);
                let failures = r.and_then(|r| r["failures"].as_i64()).unwrap_or(0);
                println!(
                    "{name:<10} weight {weight:.2}  {uses} calls, {failures} failed  — {}",
                    s["description"].as_str().unwrap_or_default()
                );
                if let Some(reason) = r.and_then(|r| r["flag_reason"].as_str()) {
                    println!("{:<10} FLAGGED: {reason}", "");
                }
            }
        }
        Command::Skills {
            command: Some(SkillsCommand::Enable { name }),
        } => {
            let api = connect().await?;
            let plugin = api
                .select(
                    "spine",
                    "plugins",
                    &format!("select=manifest&name=eq.{name}"),
                )
                .await?;
            let manifest = plugin
                .first()
                .with_context(|| format!("no skill named {name}"))?["manifest"]
                .clone();
            println!("{name} may, for you: {}", manifest["permissions"]);
            api.rpc(
                "spine",
                "grant_consent",
                json!({"plugin": name, "scopes": ["*"]}),
            )
            .await?;
            println!("enabled {name}");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("spine-assistant: {e:#}");
        std::process::exit(1);
    }
}
