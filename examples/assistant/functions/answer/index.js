// The assistant's main skill: the question and the recalled memories to the
// user's own language model (any OpenAI-compatible chat API: their URL in
// assistant_settings, their key in the vault), streamed back as server-sent
// events: `thought` (what the skill is doing), `token` (the answer), then
// `done`, or `error` — a failure is an answer the assistant records, not a
// crash of the function.
const enc = new TextEncoder();
const event = (name, data) => enc.encode(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);

/** The `content` deltas of lines of an OpenAI chat completion stream. */
function* deltas(lines) {
  for (const line of lines) {
    if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
    const delta = JSON.parse(line.slice(6)).choices?.[0]?.delta?.content;
    if (delta) yield delta;
  }
}

Deno.serve(async (req, ctx) => {
  const { question, memories = [] } = await req.json().catch(() => ({}));
  if (typeof question !== "string" || !question.trim()) {
    return Response.json({ error: "question (a non-empty string) is required" }, { status: 400 });
  }
  return new Response(
    new ReadableStream({
      async start(out) {
        try {
          const { rows } = await ctx.db.select("assistant_settings", { columns: ["llm_url", "llm_model"] });
          const settings = rows[0];
          if (!settings?.llm_url) throw new Error("no language model set: spine-assistant settings --llm-url URL");
          const key = ctx.secrets.get("LLM_API_KEY");
          if (!key) throw new Error("no LLM_API_KEY of yours in the vault: spine-assistant key set LLM_API_KEY");
          out.enqueue(event("thought", `asking ${settings.llm_model} at ${new URL(settings.llm_url).host} with your key`));
          const context = memories.map((m) => `- ${m.text}`).join("\n") || "(none)";
          const answer = await fetch(`${settings.llm_url.replace(/\/$/, "")}/chat/completions`, {
            method: "POST",
            headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
            body: JSON.stringify({
              model: settings.llm_model,
              stream: true,
              messages: [
                { role: "system", content: `You are the user's assistant. What they told you before:\n${context}` },
                { role: "user", content: question },
              ],
            }),
          });
          if (!answer.ok) throw new Error(`the model answered ${answer.status}: ${(await answer.text()).slice(0, 200)}`);
          // The provider's stream, relayed delta by delta as it arrives.
          let partial = "";
          for await (const text of answer.body.pipeThrough(new TextDecoderStream())) {
            const lines = (partial + text).split("\n");
            partial = lines.pop();
            for (const delta of deltas(lines)) out.enqueue(event("token", delta));
          }
          out.enqueue(event("done", {}));
        } catch (e) {
          out.enqueue(event("error", e.message));
        }
        out.close();
      },
    }),
    { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } },
  );
});
