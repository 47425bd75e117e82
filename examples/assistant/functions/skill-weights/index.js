// The database webhook's target (Supabase's payload: {type, table, record}):
// each new skill_usage row into its owner's routing weights. Spine runs a
// webhook's function as the row's writer, so this acts for the user whose
// call it was; assistant_apply_usage applies a row once, so a redelivery (the
// webhook is at least once) changes nothing.
Deno.serve(async (req, ctx) => {
  const { type, table, record } = await req.json();
  if (type !== "INSERT" || table !== "skill_usage" || !Number.isSafeInteger(record?.id)) {
    return Response.json({ error: "expected a skill_usage INSERT" }, { status: 400 });
  }
  const { rows } = await ctx.db.rpc("public.assistant_apply_usage", { usage_id: record.id });
  return Response.json(rows[0]);
});
