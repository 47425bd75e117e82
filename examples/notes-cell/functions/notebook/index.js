// The notes service as an edge function. Spine's worker serves it on NATS
// (svc.notebook.{verb} → POST /functions/v1/notebook/{verb}; a service is
// named like its function, and `notes` is the cell's) as the caller, so RLS
// decides; the input contract (schemas/note-create.json) is bound to the verb
// in Spine, which refuses a bad request before this runs.
const verbs = {
  create: (ctx, data) => ctx.db.rpc("notes_create", { data }),
  get: (ctx, data) => ctx.db.rpc("notes_get", { data }),
  list: (ctx, data) => ctx.db.rpc("notes_list", { data }),
};

Deno.serve(async (req, ctx) => {
  const verb = new URL(req.url).pathname.split("/").pop();
  const run = verbs[verb];
  if (!run) return Response.json({ message: `no verb ${verb}` }, { status: 404 });
  const data = await req.json().catch(() => null);
  if (data === null || typeof data !== "object") {
    return Response.json({ message: "data must be a JSON object" }, { status: 422 });
  }
  const { rows } = await run(ctx, data);
  if (rows[0] == null) return Response.json({ message: "not found" }, { status: 404 });
  return Response.json(rows[0]);
});
