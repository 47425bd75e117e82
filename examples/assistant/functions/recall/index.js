// The assistant's memory: the question embedded by the same model the worker
// embedded the memories with (the host's, Supabase.ai.Session), then the
// nearest memories of the caller (spine.similar runs as them: RLS and this
// plugin's `entities.read: memory` decide what it can see).
const session = new Supabase.ai.Session("all-MiniLM-L6-v2");

Deno.serve(async (req, ctx) => {
  const { query, k = 3 } = await req.json().catch(() => ({}));
  if (typeof query !== "string" || !query.trim()) {
    return Response.json({ error: "query (a non-empty string) is required" }, { status: 400 });
  }
  const vector = await session.run(query);
  const { rows } = await ctx.db.rpc("spine.similar", {
    kind: "memory",
    query: vector,
    k: Math.min(Math.max(Number(k) || 3, 1), 20),
  });
  return Response.json({
    memories: rows.map((r) => ({ id: r.id, text: r.data.text, distance: r.distance })),
  });
});
