// Device events: {device, kind, value} from the user's phone or watch, recorded
// as their event device.ReadingRecorded (subject device/<name>), which the relay
// sends to platform-events under their id.
Deno.serve(async (req, ctx) => {
  const { device, kind, value } = await req.json().catch(() => ({}));
  const named = typeof device === "string" && /^[\w.-]{1,64}$/.test(device);
  if (!named || typeof kind !== "string" || kind.length > 64 || typeof value !== "number") {
    return Response.json({ error: "expected {device: name, kind: text, value: number}" }, { status: 400 });
  }
  const id = await ctx.emit("device.ReadingRecorded", { device, kind, value }, `device/${device}`);
  return Response.json({ recorded: id });
});
