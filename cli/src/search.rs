//! `spine reindex <kind>`: rebuilds a kind's Meilisearch index the way
//! `spine-worker reindex` does (a side index swapped in atomically; changes made
//! meanwhile written again), with a progress bar and its ETA on stderr.

use crate::db::Db;
use crate::output::Out;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::time::Duration;

pub struct Meili {
    pub url: String,
    pub key: Option<String>,
    pub sink: String,
}

pub async fn reindex(db: &Db, out: &Out, meili: Meili, kind: &str) -> anyhow::Result<()> {
    let search = spine_worker::config::SearchConfig {
        public_url: meili.url.clone(),
        url: meili.url,
        key: meili.key,
        sink: meili.sink,
        batch: 500,
        poll: Duration::from_secs(1),
    };
    // A person sees a bar; a program (--json) only the result.
    let bar = if out.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} documents, {per_sec}, ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(format!("spine_{kind}"));
    let progress_bar = bar.clone();
    let done = spine_worker::search::reindex::rebuild(
        &db.config,
        &search,
        kind,
        &mut move |written, total| {
            progress_bar.set_length(total);
            progress_bar.set_position(written);
        },
    )
    .await
    .map_err(
        |e| match e.downcast_ref::<spine_worker::search::reindex::BadKind>() {
            Some(bad) => crate::BadInput(bad.to_string()).into(),
            None => e,
        },
    )?;
    bar.finish_and_clear();
    out.emit(
        &json!({"index": format!("spine_{kind}"), "documents": done.documents,
                "written_again": done.again, "refused": done.refused}),
        || {
            format!(
                "reindexed spine_{kind}: {} documents, swapped in; {} written again for changes \
                 during the rebuild; {} refused by Meilisearch (spine.search_rejections)",
                done.documents, done.again, done.refused
            )
        },
    );
    Ok(())
}
