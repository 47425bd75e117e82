// The hub's page: sign in through /auth/v1, list my people (public.my_people,
// RLS: mine only), and keep the list current: every data.EntityCreated or
// data.EntityUpdated event of mine arrives over Realtime (spine.events, in
// commit order) and the list is read again.
const { createClient } = window.supabase;
const { anonKey } = await (await fetch("/studio/config.json")).json();
const db = createClient(window.location.origin, anonKey, {
  auth: { storage: window.sessionStorage },
});
const $ = (id) => document.getElementById(id);

async function showPeople() {
  const { data, error } = await db.from("my_people").select("id, name, email, phone").order("name");
  if (error) {
    $("error").textContent = error.message;
    return;
  }
  $("list").replaceChildren(
    ...data.map((p) => {
      const li = document.createElement("li");
      li.dataset.id = p.id;
      li.textContent = [p.name, p.email, p.phone].filter(Boolean).join(" · ");
      return li;
    }),
  );
  $("empty").hidden = data.length > 0;
}

function follow() {
  const changed = () => showPeople();
  db.channel("hub-people")
    .on("postgres_changes", { event: "INSERT", schema: "spine", table: "events", filter: "type=eq.data.EntityCreated" }, changed)
    .on("postgres_changes", { event: "INSERT", schema: "spine", table: "events", filter: "type=eq.data.EntityUpdated" }, changed)
    .subscribe((status) => {
      $("status").textContent = status === "SUBSCRIBED" ? "live" : status.toLowerCase();
      if (status === "SUBSCRIBED") showPeople();
    });
}

async function signedIn(user) {
  $("who").textContent = user.email;
  $("signin").hidden = true;
  $("people").hidden = false;
  follow();
}

$("signin").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const { data, error } = await db.auth.signInWithPassword({ email: form.get("email"), password: form.get("password") });
  if (error) {
    $("error").textContent = error.message;
    return;
  }
  signedIn(data.user);
});

const { data } = await db.auth.getSession();
if (data.session) signedIn(data.session.user);
