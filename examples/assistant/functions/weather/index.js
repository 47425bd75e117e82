// A second skill: the user's weather service (their URL in assistant_settings,
// their key in the vault). Streams like `answer`: `thought`, `token`, then
// `done` or `error`.
const enc = new TextEncoder();
const event = (name, data) => enc.encode(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);

Deno.serve(async (req, ctx) => {
  const { question } = await req.json().catch(() => ({}));
  if (typeof question !== "string" || !question.trim()) {
    return Response.json({ error: "question (a non-empty string) is required" }, { status: 400 });
  }
  return new Response(
    new ReadableStream({
      async start(out) {
        try {
          const { rows } = await ctx.db.select("assistant_settings", { columns: ["weather_url"] });
          const url = rows[0]?.weather_url;
          if (!url) throw new Error("no weather service set: spine-assistant settings --weather-url URL");
          const key = ctx.secrets.get("WEATHER_API_KEY");
          if (!key) throw new Error("no WEATHER_API_KEY of yours in the vault: spine-assistant key set WEATHER_API_KEY");
          out.enqueue(event("thought", `asking your weather service at ${new URL(url).host}`));
          const forecast = await fetch(`${url.replace(/\/$/, "")}/forecast?q=${encodeURIComponent(question)}`, {
            headers: { authorization: `Bearer ${key}` },
          });
          if (!forecast.ok) throw new Error(`the weather service answered ${forecast.status}: ${(await forecast.text()).slice(0, 200)}`);
          const { summary } = await forecast.json();
          out.enqueue(event("token", String(summary)));
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
