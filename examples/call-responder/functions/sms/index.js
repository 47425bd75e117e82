// The SMS channel plugin. A SendOutgoingMessage job calls it as the user whose
// rule enqueued it: their gateway, their token (BYOK, `<user>/SMS_GATEWAY_TOKEN`
// in the vault, read with their consent). The job's Idempotency-Key goes to the
// gateway, so a job run twice (a worker killed mid-send) sends one SMS: what
// SMS APIs offer for retries (Twilio's I-Twilio-Idempotency-Token, Stripe's
// Idempotency-Key).
Deno.serve(async (req, ctx) => {
  const { to, text, gateway } = await req.json();
  if (!to || !text || !gateway) return Response.json({ error: "to, text and gateway are required" }, { status: 400 });
  const token = ctx.secrets.get("SMS_GATEWAY_TOKEN");
  if (!token) return Response.json({ error: "no SMS_GATEWAY_TOKEN of yours in the vault" }, { status: 412 });
  const sent = await fetch(`${gateway.replace(/\/$/, "")}/messages`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "idempotency-key": req.headers.get("idempotency-key") ?? crypto.randomUUID(),
    },
    body: JSON.stringify({ to, text }),
  });
  if (!sent.ok) {
    // Not 2xx: the job fails and the queue retries it with backoff.
    return Response.json({ error: `gateway answered ${sent.status}: ${await sent.text()}` }, { status: 502 });
  }
  const { id } = await sent.json();
  await ctx.emit("communication.MessageSent", { to, text, channel: "sms", provider_id: id }, `sms/${id}`);
  return Response.json({ sent: id });
});
