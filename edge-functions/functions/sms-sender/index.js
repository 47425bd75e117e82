// A channel plugin, typically called by a rule's call_function action with
// {to, text, gateway}. The gateway's host must be declared in the manifest; the
// token comes from the vault, for the user the job acts for.
Deno.serve(async (req, ctx) => {
  const { to, text, gateway } = await req.json();
  if (!to || !text || !gateway) {
    return Response.json({ error: "expected {to, text, gateway}" }, { status: 400 });
  }
  const token = ctx.secrets.get("SMS_API_TOKEN");
  if (!token) {
    return Response.json({ error: "no SMS_API_TOKEN in the vault for this user" }, { status: 424 });
  }
  const sent = await fetch(gateway, {
    method: "POST",
    headers: {
      "authorization": `Bearer ${token}`,
      "content-type": "application/json",
      "idempotency-key": req.headers.get("idempotency-key") ?? crypto.randomUUID(),
    },
    body: JSON.stringify({ to, text }),
  });
  if (!sent.ok) {
    // A failed send fails the job, which retries it with backoff.
    return Response.json({ error: `gateway answered ${sent.status}` }, { status: 502 });
  }
  const event = await ctx.emit("communication.MessageSent", { to, chars: text.length }, `phone/${to}`);
  return Response.json({ sent: true, event: event.id });
});
