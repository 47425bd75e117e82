// The hub's CRM connector. The CRM (or a sync job) POSTs {contacts: [...]} as
// the user; each contact lands as a raw record of the user's `crm` source and
// becomes (or updates) a person through the source's mapping: data first,
// actions second. spine.ingest emits connector.DataReceived and the entity
// events in the same transaction.
Deno.serve(async (req, ctx) => {
  const { contacts } = await req.json().catch(() => ({}));
  if (!Array.isArray(contacts) || contacts.length === 0 || contacts.length > 1000) {
    return Response.json({ error: "expected {contacts: [...]} with 1 to 1000 contacts" }, { status: 400 });
  }
  const { rows } = await ctx.db.rpc("spine.ingest", { source: "crm", records: contacts });
  const landed = rows[0];
  await ctx.emit("crm.SyncCompleted", { source: "crm", received: landed.received, created: landed.created, rejected: landed.rejected });
  return Response.json(landed, { status: landed.rejected > 0 ? 207 : 200 });
});
