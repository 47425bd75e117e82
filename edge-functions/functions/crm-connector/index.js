// A push connector: the CRM posts {source, contacts: [...]} and the records land
// through spine.ingest into the caller's source, as the caller (RLS applies).
Deno.serve(async (req, ctx) => {
  const { source, contacts } = await req.json();
  if (typeof source !== "string" || !Array.isArray(contacts)) {
    return Response.json({ error: "expected {source, contacts: [...]}" }, { status: 400 });
  }
  // Each contact's `id` is its external id (the source's mapping says which fields matter).
  const { rows } = await ctx.db.rpc("spine.ingest", { source, records: contacts });
  const result = rows[0];
  await ctx.emit("crm.SyncCompleted", { source, received: result.received, rejected: result.rejected });
  return Response.json(result, { status: result.rejected > 0 ? 207 : 200 });
});
