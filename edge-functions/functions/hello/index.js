// The smallest Spine function: Supabase's hello-world shape.
Deno.serve((req, ctx) =>
  Response.json({ message: "Hello from Spine", user: ctx.user.id, role: ctx.user.role }),
);
