//! Streamed responses: the chunks a function's `ReadableStream` produces travel
//! from its invoker thread to the HTTP body through a small bounded channel, so a
//! slow reader slows the function down (back-pressure) instead of piling bytes up
//! in the host, and the function's wall-clock limit still bounds every wait.
//!
//! A body that ends early (a limit, a throw after the head went out) must not look
//! complete to the client: the end carries the outcome, and an error becomes a
//! broken body (the connection is cut before the final chunk of a chunked reply).

use crate::engine::{BodySink, InvokeError, SinkClosed};
use bytes::Bytes;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Chunks in flight between the function and the client: enough to keep the
/// socket busy, few enough that a stalled reader stops the function quickly.
const IN_FLIGHT: usize = 8;

/// The head of a streamed answer, sent once, before the first chunk.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: StreamedBody,
}

/// The chunks of a streamed body, then how the function ended.
pub struct StreamedBody {
    chunks: mpsc::Receiver<Vec<u8>>,
    outcome: oneshot::Receiver<Result<(), InvokeError>>,
}

impl StreamedBody {
    /// The body as a stream of byte chunks for an HTTP response; ends with an
    /// error when the function failed after its head went out.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut body = state?;
            match body.chunks.recv().await {
                Some(chunk) => Some((Ok(Bytes::from(chunk)), Some(body))),
                None => match body.outcome.await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some((Err(std::io::Error::other(e.to_string())), None)),
                    Err(_) => Some((
                        Err(std::io::Error::other(
                            "the invocation ended without an outcome",
                        )),
                        None,
                    )),
                },
            }
        })
    }
}

/// The engine's [`BodySink`] on an invoker thread: sends the head through
/// `head`, then each chunk through the channel, blocking this thread (not the
/// runtime) while the reader is behind.
pub struct ChannelSink {
    runtime: tokio::runtime::Handle,
    head: Option<oneshot::Sender<Head>>,
    chunks: Option<mpsc::Sender<Vec<u8>>>,
    outcome: Option<oneshot::Sender<Result<(), InvokeError>>>,
}

impl ChannelSink {
    /// A sink, and where its head arrives.
    pub fn new(runtime: tokio::runtime::Handle) -> (Self, oneshot::Receiver<Head>) {
        let (head, head_rx) = oneshot::channel();
        let sink = ChannelSink {
            runtime,
            head: Some(head),
            chunks: None,
            outcome: None,
        };
        (sink, head_rx)
    }

    /// Did the head go out (so the answer is streamed)?
    pub fn started(&self) -> bool {
        self.head.is_none()
    }

    /// Ends a started body with the invocation's outcome.
    pub fn finish(mut self, outcome: Result<(), InvokeError>) {
        self.chunks = None; // the reader sees the end of the chunks first
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(outcome);
        }
    }
}

impl BodySink for ChannelSink {
    fn head(&mut self, status: u16, headers: &[(String, String)]) {
        let (chunks, chunks_rx) = mpsc::channel(IN_FLIGHT);
        let (outcome, outcome_rx) = oneshot::channel();
        self.chunks = Some(chunks);
        self.outcome = Some(outcome);
        if let Some(head) = self.head.take() {
            let _ = head.send(Head {
                status,
                headers: headers.to_vec(),
                body: StreamedBody {
                    chunks: chunks_rx,
                    outcome: outcome_rx,
                },
            });
        }
    }

    fn chunk(&mut self, bytes: Vec<u8>, deadline: Instant) -> Result<(), SinkClosed> {
        let Some(chunks) = &self.chunks else {
            return Err(SinkClosed::Gone);
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        // The timer is made inside the runtime (this thread is not one of its own).
        let sent = self
            .runtime
            .block_on(async { tokio::time::timeout_at(deadline, chunks.send(bytes)).await });
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SinkClosed::Gone),
            Err(_) => Err(SinkClosed::Deadline),
        }
    }
}
