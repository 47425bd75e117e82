// Streams a reply token by token as server-sent events, the way an assistant
// streams an LLM's answer (or its "agent thoughts") to the browser: the client
// renders each `data:` line as it arrives. Here the "model" echoes the prompt's
// words, one every `delay_ms`; a real one would pipe its provider's stream.
const encoder = new TextEncoder();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function* tokens(prompt, delayMs) {
  for (const word of prompt.split(/\s+/).filter(Boolean)) {
    yield encoder.encode(`data: ${JSON.stringify({ token: word })}\n\n`);
    await sleep(delayMs);
  }
  yield encoder.encode("data: [DONE]\n\n");
}

Deno.serve(async (req) => {
  const { prompt = "", delay_ms = 100 } = await req.json().catch(() => ({}));
  const delay = Math.min(Math.max(Number(delay_ms) || 0, 0), 1000);
  return new Response(ReadableStream.from(tokens(String(prompt), delay)), {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
  });
});
