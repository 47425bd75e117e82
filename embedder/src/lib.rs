//! `spine-embedder`: a small local process that turns text into vectors with
//! all-MiniLM-L6-v2, behind the OpenAI-compatible `/v1/embeddings` that Spine's
//! `embed` jobs call. Users may point Spine at Ollama or a cloud API instead
//! (`SPINE_EMBEDDINGS_URL`); this one exists so a fresh clone runs offline.

pub mod model;
pub mod server;
