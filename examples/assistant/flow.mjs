// The assistant, step by step, as an app on Spine's public surfaces: psql for
// what the operator sets up (schema, skills, the webhook, pg_cron), the
// `spine-assistant` CLI (Rust, through the gateway) for everything a user
// does. `walkthrough.mjs` prints it; `assistant.test.mjs` checks it.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { bin, install, psql, spawnWorker } from "../lib.mjs";

export { psql, until } from "../lib.mjs";

const here = dirname(fileURLToPath(import.meta.url));

/** The operator's part: the schema, the four functions, then the webhook to one of them. */
export async function operatorSetup() {
  await install(here, { table: "skill_usage", then: ["webhook.sql"] });
}

/**
 * `spine-worker` as this app needs it: the `embed` queue (memories become
 * vectors with the stack's embedder) and the webhook's queue (each usage row
 * to `skill-weights`, in-process). Its relay advances a sink of its own.
 */
export function startWorker({ sink }) {
  return spawnWorker(sink, { SPINE_JOB_QUEUES: "embed,webhook.assistant_skill_usage=webhook", SPINE_JOB_POLL_MS: "100" });
}

/**
 * Stand-ins for the user's own providers (the part of the app outside Spine;
 * no network here): an OpenAI-compatible chat API that streams its answer
 * after `thinkMs`, a word every `wordMs`, built from the memories it was given, and a weather
 * service. Each checks the bearer key it was given; `requests` records what
 * they received.
 */
export async function providers({ llmKey, weatherKey, thinkMs = 600, wordMs = 60 }) {
  const requests = [];
  const server = createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    const url = new URL(req.url, "http://x");
    requests.push({ path: url.pathname, authorization: req.headers.authorization, body });
    if (req.method === "POST" && url.pathname === "/v1/chat/completions") {
      if (req.headers.authorization !== `Bearer ${llmKey}`) {
        res.writeHead(401, { "content-type": "application/json" }).end('{"error":{"message":"Incorrect API key provided"}}');
        return;
      }
      const { model, messages } = JSON.parse(body);
      const remembered = messages[0].content.split("\n").find((l) => l.startsWith("- "))?.slice(2);
      const answer = remembered ? `From what you told me: ${remembered}` : "You have not told me about that.";
      await new Promise((r) => setTimeout(r, thinkMs));
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const word of answer.split(/(?<= )/)) {
        const chunk = { object: "chat.completion.chunk", model, choices: [{ index: 0, delta: { content: word } }] };
        res.write(`data: ${JSON.stringify(chunk)}\n\n`);
        await new Promise((r) => setTimeout(r, wordMs));
      }
      res.end("data: [DONE]\n\n");
    } else if (req.method === "GET" && url.pathname === "/forecast") {
      if (req.headers.authorization !== `Bearer ${weatherKey}`) {
        res.writeHead(401, { "content-type": "application/json" }).end('{"error":"API key is invalid or expired"}');
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end('{"summary":"Rain from 3 pm; take an umbrella."}');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return { llmUrl: `${base}/v1`, weatherUrl: base, requests, close: () => new Promise((r) => server.close(r)) };
}

/**
 * A user of the CLI: their own session file (as their own home directory
 * would hold it), and a way to run `spine-assistant …` as a child process.
 * `run` resolves with the exit code and the output; `stdout` is kept as the
 * chunks it arrived in, each with the time it arrived (ms); with `echo` it is
 * also printed as it arrives.
 */
export function cliUser(name) {
  const home = mkdtempSync(join(tmpdir(), `spine-assistant-${name}-`));
  const session = join(home, "session.json");
  const run = (args, { input, env = {}, echo = false } = {}) =>
    new Promise((resolve, reject) => {
      const started = Date.now();
      const child = spawn(bin("spine-assistant"), args, {
        env: { ...process.env, SPINE_ASSISTANT_SESSION: session, ...env },
        stdio: ["pipe", "pipe", "pipe"],
      });
      const chunks = [];
      let stderr = "";
      let lineStart = true; // indent echoed lines, not chunks in mid-line
      child.stdout.on("data", (d) => {
        const text = d.toString();
        chunks.push({ at: Date.now() - started, text });
        if (echo) {
          process.stdout.write(text.replace(/(^|\n)(?=.)/g, (m, nl, at) => (at > 0 || lineStart ? `${nl}   ` : nl)));
          lineStart = text.endsWith("\n");
        }
      });
      child.stderr.on("data", (d) => (stderr += d));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, chunks, stdout: chunks.map((c) => c.text).join(""), stderr }));
      child.stdin.end(input ?? "");
    });
  return { name, home, session, run };
}

/** The user's id, from the session the CLI keeps. */
export const userId = (user) => JSON.parse(readFileSync(user.session, "utf8")).user_id;

/** A user's routing row of `skill`: `column`'s value, as psql prints it. */
export const routing = (user, skill, column) =>
  psql(`SELECT ${column} FROM public.skill_routing WHERE owner_id = :'id' AND skill = :'skill'`, { id: userId(user), skill });

/** Runs `spine-assistant …`; its stdout, or a thrown error with its stderr. */
export async function must(user, args, options) {
  const r = await user.run(args, options);
  if (r.code !== 0) throw new Error(`spine-assistant ${args.join(" ")} (${user.name}): exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Memories `ids` have vectors (the worker's embed jobs ran). */
export const embedded = (ids) =>
  Number(psql(`SELECT count(*) FROM spine.entities WHERE id = ANY(:'ids'::uuid[]) AND embedding IS NOT NULL`, { ids: `{${ids.join(",")}}` })) === ids.length;

/**
 * A new user, all through the CLI: signs up (the password from the
 * environment, not the command line), points the assistant at their
 * providers, stores their own keys (from stdin) and enables the skills.
 */
export async function userSetup(user, { llmUrl, llmKey, weatherUrl, weatherKey }) {
  const email = `${user.name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.test`;
  const lines = [await must(user, ["signup", "--email", email], { env: { SPINE_ASSISTANT_PASSWORD: `${user.name} password` } })];
  lines.push(await must(user, ["settings", "--llm-url", llmUrl, "--weather-url", weatherUrl]));
  lines.push(await must(user, ["key", "set", "LLM_API_KEY"], { input: `${llmKey}\n` }));
  lines.push(await must(user, ["key", "set", "WEATHER_API_KEY"], { input: `${weatherKey}\n` }));
  for (const skill of ["recall", "answer", "weather"]) lines.push(await must(user, ["skills", "enable", skill]));
  return { email, output: lines.join("") };
}
