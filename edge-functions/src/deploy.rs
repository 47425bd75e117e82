//! `spine-functions deploy [DIR]`: every `DIR/<name>/` with `manifest.json` and
//! `index.js` becomes a deployed function. Each module must compile and each
//! manifest's name must match its folder before anything is written; the database
//! validates the manifest again (`spine.deploy_function`).

use crate::engine::check_module;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

pub struct Bundle {
    pub name: String,
    pub manifest: serde_json::Value,
    pub source: String,
}

/// Reads and checks every function folder under `dir`, sorted by name.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<Bundle>> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    folders.sort();
    if folders.is_empty() {
        bail!("no <name>/manifest.json under {}", dir.display());
    }
    folders.iter().map(|f| read_one(f)).collect()
}

fn read_one(folder: &Path) -> anyhow::Result<Bundle> {
    let folder_name = folder
        .file_name()
        .and_then(|n| n.to_str())
        .context("folder name is not UTF-8")?
        .to_string();
    let manifest_path = folder.join("manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", manifest_path.display()))?;
    // The same checks spine.deploy_function makes, before anything is sent.
    spine_core::manifest::Manifest::parse(manifest.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_path.display()))?;
    if manifest["name"].as_str() != Some(folder_name.as_str()) {
        bail!(
            "{}: \"name\" must be the folder's name, {folder_name}",
            manifest_path.display()
        );
    }
    let index = folder.join("index.js");
    let source =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    check_module(&source).map_err(|e| anyhow::anyhow!("{}: {e}", index.display()))?;
    Ok(Bundle {
        name: folder_name,
        manifest,
        source,
    })
}

/// Deploys `bundles` in one transaction: all or none.
pub async fn deploy(
    database: &spine_db::DbConfig,
    bundles: &[Bundle],
) -> anyhow::Result<Vec<(String, String)>> {
    let (mut client, connection) = database.connect().await?;
    tokio::spawn(connection);
    let tx = client.transaction().await?;
    let mut deployed = Vec::new();
    for b in bundles {
        let row = tx
            .query_one(
                "SELECT spine.deploy_function($1, $2)",
                &[&b.manifest, &b.source],
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", b.name, crate::sql::describe(e)))?;
        deployed.push((b.name.clone(), row.get::<_, String>(0)));
    }
    tx.commit().await?;
    Ok(deployed)
}
