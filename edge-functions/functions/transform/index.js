// A pure JSON transform: order lines in, normalized lines and totals out.
export default {
  async fetch(req) {
    if (req.method !== "POST") {
      return Response.json({ error: "POST an order" }, { status: 405 });
    }
    let order;
    try {
      order = await req.json();
    } catch (_) {
      return Response.json({ error: "the body is not JSON" }, { status: 400 });
    }
    if (!Array.isArray(order.lines)) {
      return Response.json({ error: "lines must be an array" }, { status: 422 });
    }
    const lines = order.lines.map((l) => ({
      sku: String(l.sku ?? "").trim().toUpperCase(),
      qty: Math.max(0, Math.trunc(Number(l.qty) || 0)),
      cents: Math.round(Number(l.price) * 100) || 0,
    }));
    const total = lines.reduce((sum, l) => sum + l.qty * l.cents, 0);
    return Response.json({ id: order.id ?? null, lines, total_cents: total, items: lines.length });
  },
};
