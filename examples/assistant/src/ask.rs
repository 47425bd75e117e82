//! `ask`: one turn of the assistant. It routes the question to a skill (the
//! user's routing weights; a flagged skill is passed over), recalls memories,
//! streams the skill's answer — its `thought` events printed as they come,
//! its `token` events inline — and records the call in `skill_usage`, which
//! the database webhook folds into the weights.

use crate::api::Api;
use anyhow::{bail, Result};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Instant;

/// A thought of the assistant, printed at once.
fn thought(text: &str) {
    println!("· {text}");
    let _ = std::io::stdout().flush();
}

/// The memories nearest to `query` (the `recall` function).
pub async fn recall(api: &Api, query: &str, k: u32) -> Result<Vec<Value>> {
    let text = api
        .invoke("recall", json!({"query": query, "k": k}))
        .await?
        .text()
        .await?;
    let answer: Value = serde_json::from_str(&text)?;
    Ok(answer["memories"].as_array().cloned().unwrap_or_default())
}

/// The skill to use: `wanted`, or the best routed one that is not flagged.
async fn route(api: &Api, question: &str, wanted: Option<&str>) -> Result<String> {
    let routes = api
        .rpc("public", "assistant_route", json!({"question": question}))
        .await?;
    let routes = routes.as_array().cloned().unwrap_or_default();
    if let Some(skill) = wanted {
        if !routes.iter().any(|r| r["skill"] == skill) {
            // Not routed for this question, but asked for by name.
            thought(&format!("using {skill}, as asked"));
        }
        return Ok(skill.to_string());
    }
    for r in &routes {
        let skill = r["skill"].as_str().unwrap_or_default();
        if r["flagged"] == true {
            thought(&format!(
                "passing over {skill}: flagged by the skill review ({})",
                r["flag_reason"].as_str().unwrap_or("no reason")
            ));
            continue;
        }
        thought(&format!(
            "routing to {skill} (weight {:.2})",
            r["weight"].as_f64().unwrap_or(1.0)
        ));
        return Ok(skill.to_string());
    }
    bail!("no skill can answer this: every one routed is flagged (see `spine-assistant skills`)")
}

/// Streams the skill's answer to stdout; the error it reported, if any.
async fn stream(
    api: &Api,
    skill: &str,
    question: &str,
    memories: &[Value],
) -> Result<Option<String>> {
    let response = api
        .invoke(skill, json!({"question": question, "memories": memories}))
        .await?;
    let mut events = response.bytes_stream().eventsource();
    let mut answered = false;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| anyhow::anyhow!("{skill}'s stream broke off: {e}"))?;
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::String(event.data));
        match event.event.as_str() {
            "thought" => thought(data.as_str().unwrap_or_default()),
            "token" => {
                print!("{}", data.as_str().unwrap_or_default());
                let _ = std::io::stdout().flush();
                answered = true;
            }
            "done" => {
                if answered {
                    println!();
                }
                return Ok(None);
            }
            "error" => return Ok(Some(data.as_str().unwrap_or("unknown error").to_string())),
            _ => {}
        }
    }
    // A stream cut off before `done` is a failed call, not half an answer.
    Ok(Some(format!("{skill}'s answer ended before it was done")))
}

/// Memories further than this (cosine distance) from the question are not
/// about it: all-MiniLM-L6-v2 puts a related memory near 0.5, unrelated ones
/// past 0.8 (measured on the walkthrough's memories).
const RELATED: f64 = 0.7;

pub async fn ask(api: &Api, question: &str, wanted: Option<&str>) -> Result<()> {
    let skill = route(api, question, wanted).await?;
    let mut memories = recall(api, question, 3).await?;
    memories.retain(|m| m["distance"].as_f64().is_some_and(|d| d < RELATED));
    match memories.first() {
        None => thought("no memories about this"),
        Some(m) => thought(&format!(
            "recalled {} related {}; nearest: \"{}\"",
            memories.len(),
            if memories.len() == 1 {
                "memory"
            } else {
                "memories"
            },
            m["text"].as_str().unwrap_or_default()
        )),
    }
    let started = Instant::now();
    let failure = match stream(api, &skill, question, &memories).await {
        Ok(failure) => failure,
        Err(e) => Some(e.to_string()),
    };
    let latency_ms = started.elapsed().as_millis() as i64;
    api.insert(
        "skill_usage",
        json!({"skill": skill, "ok": failure.is_none(), "latency_ms": latency_ms,
               "error": failure.as_deref().map(|e| e.chars().take(2000).collect::<String>())}),
        None,
    )
    .await?;
    match failure {
        None => Ok(()),
        Some(e) => bail!("{skill} failed: {e}"),
    }
}
