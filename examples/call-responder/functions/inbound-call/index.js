// Twilio calls this when someone calls one of our users' numbers. It carries no
// token (the manifest says verify_jwt: false), so it proves itself the way
// Twilio documents it: X-Twilio-Signature = base64(HMAC-SHA1(auth token,
// URL + each POST parameter name and value, sorted by name)).
// https://www.twilio.com/docs/usage/webhooks/webhooks-security
const enc = new TextEncoder();

async function signatureOf(url, form, token) {
  const signed = url + [...new Set(form.keys())].sort().map((k) => k + form.get(k)).join("");
  const key = await crypto.subtle.importKey("raw", enc.encode(token), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(signed)));
  return btoa(String.fromCharCode(...mac));
}

// TwiML: what Twilio does with the call. Nothing to say; the flow goes on in Spine.
const twiml = (status = 200) =>
  new Response('<?xml version="1.0" encoding="UTF-8"?><Response/>', {
    status,
    headers: { "content-type": "text/xml" },
  });

Deno.serve(async (req, ctx) => {
  if (req.method !== "POST") return new Response("POST only", { status: 405 });
  const form = new URLSearchParams(await req.text());
  const token = ctx.secrets.get("TWILIO_AUTH_TOKEN");
  if (!token) return Response.json({ error: "TWILIO_AUTH_TOKEN is not in the vault" }, { status: 500 });
  const expected = await signatureOf(req.url, form, token);
  const given = req.headers.get("x-twilio-signature") ?? "";
  if (!crypto.subtle.timingSafeEqual(enc.encode(expected), enc.encode(given))) {
    return Response.json({ error: "bad signature" }, { status: 401 });
  }
  const [callSid, from, to] = [form.get("CallSid"), form.get("From"), form.get("To")];
  if (!callSid || !from || !to) return Response.json({ error: "CallSid, From and To are required" }, { status: 400 });

  // Whose number is it? Then act for them (their consent: users.act_as:*).
  const { rows } = await ctx.db.rpc("owner_of_number", { number: to });
  const owner = rows[0];
  if (!owner) return Response.json({ error: `no user has ${to}` }, { status: 404 });
  await ctx.actAs(owner);
  const { rows: recorded } = await ctx.db.rpc("record_call", { call_sid: callSid, from_number: from, to_number: to });
  console.log(recorded[0] ? `call ${callSid} from ${from}: event ${recorded[0]}` : `call ${callSid}: a replay, nothing to do`);
  return twiml();
});
