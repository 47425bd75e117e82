// The Web API subset a Spine function sees, built on one host call:
// __host(op, jsonArgument) -> JSON {"ok": value} or {"err": message, "kind": name}.
// Evaluated as a script in every fresh context before the function's module.
// Only what DESIGN.md lists is provided: Request, Response, Headers, URL,
// URLSearchParams, fetch (hosts the manifest declares), TextEncoder/TextDecoder,
// atob/btoa, crypto (randomUUID, subtle), console, timers, Web streams,
// Deno.serve/Deno.env, and the Spine context (secrets, db, emit).
(function (global) {
  "use strict";
  const host = global.__host;
  delete global.__host;
  // Byte conversions done natively (see quickjs.rs): base64 → bytes (every
  // binary answer of the host), string → UTF-8 (undefined for a lone
  // surrogate), bytes → string (lossy).
  const native = global.__native;
  delete global.__native;
  const b64Bytes = native.bytes;

  class HostError extends Error {
    constructor(message, kind) {
      super(message);
      this.name = kind || "Error";
    }
  }

  function call(op, arg) {
    const answer = JSON.parse(host(op, JSON.stringify(arg === undefined ? null : arg)));
    if ("err" in answer) throw new HostError(answer.err, answer.kind);
    return answer.ok;
  }

  // ---- text and bytes -------------------------------------------------------
  function utf8Encode(str) {
    str = String(str);
    const fast = native.utf8(str);
    if (fast !== undefined) return fast;
    // A lone surrogate: encoded here, as U+FFFD.
    const out = [];
    for (let i = 0; i < str.length; i++) {
      let c = str.charCodeAt(i);
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < str.length) {
        const d = str.charCodeAt(i + 1);
        if (d >= 0xdc00 && d < 0xe000) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        } else c = 0xfffd;
      } else if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return new Uint8Array(out);
  }

  // Each invalid sequence (its maximal part) becomes one U+FFFD, as WHATWG's
  // TextDecoder does.
  const utf8Decode = (bytes) => native.text(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes));

  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(str = "") { return utf8Encode(str); }
  }
  class TextDecoder {
    constructor(label = "utf-8") {
      if (!/^utf-?8$/i.test(label)) throw new RangeError(`TextDecoder: only utf-8 is supported, not ${label}`);
    }
    get encoding() { return "utf-8"; }
    // `{stream: true}` keeps a character split between chunks for the next call
    // (how SSE readers decode a streamed body).
    decode(input, options = {}) {
      let bytes;
      if (input === undefined) bytes = new Uint8Array(0);
      else if (input instanceof ArrayBuffer) bytes = new Uint8Array(input);
      else if (ArrayBuffer.isView(input)) bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
      else throw new TypeError("TextDecoder.decode expects an ArrayBuffer or a typed array");
      if (this._pending && this._pending.length) {
        const joined = new Uint8Array(this._pending.length + bytes.length);
        joined.set(this._pending);
        joined.set(bytes, this._pending.length);
        bytes = joined;
      }
      this._pending = null;
      if (options && options.stream) {
        const end = completeUpTo(bytes);
        this._pending = bytes.slice(end);
        bytes = bytes.subarray(0, end);
      }
      return utf8Decode(bytes);
    }
  }
  // Where an incomplete UTF-8 sequence at the end of `bytes` starts (or its length).
  function completeUpTo(bytes) {
    for (let j = bytes.length - 1; j >= 0 && j >= bytes.length - 3; j--) {
      const b = bytes[j];
      if ((b & 0xc0) === 0x80) continue;
      const n = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
      return j + n > bytes.length ? j : bytes.length;
    }
    return bytes.length;
  }

  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  function btoa(binary) {
    binary = String(binary);
    let out = "";
    for (let i = 0; i < binary.length; i += 3) {
      const a = binary.charCodeAt(i), b = binary.charCodeAt(i + 1), c = binary.charCodeAt(i + 2);
      if (a > 255 || b > 255 || c > 255) throw new HostError("btoa: the string has characters outside Latin-1", "InvalidCharacterError");
      const n = (a << 16) | ((b || 0) << 8) | (c || 0);
      out += B64[n >> 18] + B64[(n >> 12) & 63] +
        (i + 1 < binary.length ? B64[(n >> 6) & 63] : "=") + (i + 2 < binary.length ? B64[n & 63] : "=");
    }
    return out;
  }
  function atob(text) {
    text = String(text).replace(/[\t\n\f\r ]/g, "").replace(/=+$/, "");
    let out = "", bits = 0, value = 0;
    for (const ch of text) {
      const v = B64.indexOf(ch);
      if (v < 0) throw new HostError("atob: not base64", "InvalidCharacterError");
      value = (value << 6) | v;
      bits += 6;
      if (bits >= 8) { bits -= 8; out += String.fromCharCode((value >> bits) & 255); }
    }
    return out;
  }
  const bytesToBinary = (bytes) => { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return s; };

  // ---- URL --------------------------------------------------------------------
  class URLSearchParams {
    constructor(init = "") {
      this._list = [];
      if (typeof init === "string") {
        for (const part of init.replace(/^\?/, "").split("&")) {
          if (!part) continue;
          const i = part.indexOf("=");
          const dec = (s) => decodeURIComponent(s.replace(/\+/g, " "));
          this._list.push(i < 0 ? [dec(part), ""] : [dec(part.slice(0, i)), dec(part.slice(i + 1))]);
        }
      } else if (init && typeof init === "object") {
        const entries = Symbol.iterator in init ? init : Object.entries(init);
        for (const [k, v] of entries) this._list.push([String(k), String(v)]);
      }
    }
    get(name) { const e = this._list.find(([k]) => k === name); return e ? e[1] : null; }
    getAll(name) { return this._list.filter(([k]) => k === name).map(([, v]) => v); }
    has(name) { return this._list.some(([k]) => k === name); }
    set(name, value) { this.delete(name); this._list.push([String(name), String(value)]); }
    append(name, value) { this._list.push([String(name), String(value)]); }
    delete(name) { this._list = this._list.filter(([k]) => k !== name); }
    entries() { return this._list[Symbol.iterator](); }
    keys() { return this._list.map(([k]) => k)[Symbol.iterator](); }
    values() { return this._list.map(([, v]) => v)[Symbol.iterator](); }
    forEach(f) { for (const [k, v] of this._list) f(v, k, this); }
    [Symbol.iterator]() { return this.entries(); }
    toString() {
      const enc = (s) => encodeURIComponent(s).replace(/%20/g, "+");
      return this._list.map(([k, v]) => `${enc(k)}=${enc(v)}`).join("&");
    }
  }

  const URL_RE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(?:([^:@\/?#]*)(?::([^@\/?#]*))?@)?(\[[^\]]+\]|[^:\/?#]*)(?::(\d+))?([^?#]*)(\?[^#]*)?(#.*)?$/;
  const DEFAULT_PORTS = { "http:": "80", "https:": "443" };
  class URL {
    constructor(input, base) {
      input = String(input);
      if (base !== undefined && !URL_RE.test(input)) {
        const b = new URL(base);
        if (input.startsWith("//")) input = b.protocol + input;
        else if (input.startsWith("/")) input = b.origin + input;
        else if (input.startsWith("?")) input = b.origin + b.pathname + input;
        else if (input.startsWith("#")) input = b.origin + b.pathname + b.search + input;
        else input = b.origin + b.pathname.replace(/[^/]*$/, "") + input;
      }
      const m = URL_RE.exec(input);
      if (!m || !m[4]) throw new TypeError(`Invalid URL: ${input}`);
      this.protocol = m[1].toLowerCase() + ":";
      this.username = m[2] || "";
      this.password = m[3] || "";
      this.hostname = m[4].toLowerCase();
      this.port = m[5] && m[5] !== DEFAULT_PORTS[this.protocol] ? m[5] : "";
      this.pathname = normalizePath(m[6] || "/");
      this.searchParams = new URLSearchParams(m[7] || "");
      this.hash = m[8] && m[8].length > 1 ? m[8] : "";
    }
    get host() { return this.port ? `${this.hostname}:${this.port}` : this.hostname; }
    get origin() { return `${this.protocol}//${this.host}`; }
    get search() { const s = this.searchParams.toString(); return s ? "?" + s : ""; }
    get href() {
      const auth = this.username ? this.username + (this.password ? ":" + this.password : "") + "@" : "";
      return `${this.protocol}//${auth}${this.host}${this.pathname}${this.search}${this.hash}`;
    }
    toString() { return this.href; }
    toJSON() { return this.href; }
  }
  function normalizePath(path) {
    const out = [];
    for (const seg of path.split("/").slice(1)) {
      if (seg === "..") out.pop();
      else if (seg !== ".") out.push(seg);
    }
    return "/" + out.join("/");
  }

  // ---- streams -----------------------------------------------------------------
  // ReadableStream as WHATWG defines it for what functions do with it: a source
  // with start/pull/cancel and a high-water mark, a default reader, async
  // iteration, ReadableStream.from, and piping through a TransformStream. A
  // handler that returns `new Response(stream)` has its chunks sent as they come.
  class ReadableStream {
    constructor(source = {}, strategy = {}) {
      source = source || {};
      this._source = source;
      this._queue = [];     // chunks enqueued and not yet read
      this._waiting = [];   // reads waiting for a chunk: {resolve, reject}
      this._state = "readable"; // then "closed" or "errored"
      this._closing = false;
      this._error = undefined;
      this._reader = null;
      this._started = false;
      this._pulling = false;
      this._pullAgain = false;
      const hwm = strategy && strategy.highWaterMark !== undefined ? Number(strategy.highWaterMark) : 1;
      if (!(hwm >= 0)) throw new RangeError("highWaterMark must be a number >= 0");
      this._hwm = hwm;
      const stream = this;
      this._controller = Object.freeze({
        get desiredSize() {
          return stream._state === "errored" ? null : stream._state === "closed" ? 0 : stream._hwm - stream._queue.length;
        },
        enqueue: (chunk) => stream._enqueue(chunk),
        close: () => stream._close(),
        error: (e) => stream._fail(e),
      });
      let started;
      try {
        started = source.start ? source.start(this._controller) : undefined;
      } catch (e) {
        this._fail(e);
        throw e;
      }
      Promise.resolve(started).then(() => { this._started = true; this._pullIfNeeded(); }, (e) => this._fail(e));
    }
    get locked() { return this._reader !== null; }
    _enqueue(chunk) {
      if (this._state !== "readable" || this._closing) throw new TypeError("enqueue: the stream is closed");
      const waiting = this._waiting.shift();
      if (waiting) waiting.resolve({ value: chunk, done: false });
      else this._queue.push(chunk);
      this._pullIfNeeded();
    }
    _close() {
      if (this._state !== "readable" || this._closing) throw new TypeError("close: the stream is closed");
      this._closing = true;
      if (this._queue.length === 0) this._finish();
    }
    _finish() {
      this._state = "closed";
      for (const w of this._waiting.splice(0)) w.resolve({ value: undefined, done: true });
    }
    _fail(e) {
      if (this._state !== "readable") return;
      this._state = "errored";
      this._error = e;
      this._queue = [];
      for (const w of this._waiting.splice(0)) w.reject(e);
    }
    _pullIfNeeded() {
      if (!this._started || this._state !== "readable" || this._closing || !this._source.pull) return;
      if (this._hwm - this._queue.length <= 0 && this._waiting.length === 0) return;
      if (this._pulling) { this._pullAgain = true; return; }
      this._pulling = true;
      Promise.resolve()
        .then(() => this._source.pull(this._controller))
        .then(() => {
          this._pulling = false;
          if (this._pullAgain) { this._pullAgain = false; this._pullIfNeeded(); }
        }, (e) => this._fail(e));
    }
    _read() {
      if (this._queue.length) {
        const value = this._queue.shift();
        if (this._closing && this._queue.length === 0) this._finish();
        else this._pullIfNeeded();
        return Promise.resolve({ value, done: false });
      }
      if (this._state === "closed") return Promise.resolve({ value: undefined, done: true });
      if (this._state === "errored") return Promise.reject(this._error);
      return new Promise((resolve, reject) => {
        this._waiting.push({ resolve, reject });
        this._pullIfNeeded();
      });
    }
    async _cancel(reason) {
      if (this._state === "closed") return;
      if (this._state === "errored") throw this._error;
      this._queue = [];
      this._finish();
      if (this._source.cancel) await this._source.cancel(reason);
    }
    getReader(options) {
      if (options && options.mode === "byob") throw new TypeError("getReader: BYOB readers are not supported");
      return new ReadableStreamDefaultReader(this);
    }
    cancel(reason) {
      if (this._reader) return Promise.reject(new TypeError("cancel: the stream is locked to a reader"));
      return this._cancel(reason);
    }
    async *[Symbol.asyncIterator]() {
      const reader = this.getReader();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          yield value;
        }
      } finally {
        reader.releaseLock();
      }
    }
    values() { return this[Symbol.asyncIterator](); }
    pipeThrough(transform) {
      this.pipeTo(transform.writable).catch(() => {});
      return transform.readable;
    }
    async pipeTo(writable) {
      const writer = writable.getWriter();
      try {
        for await (const chunk of this) await writer.write(chunk);
        await writer.close();
      } catch (e) {
        await writer.abort(e);
        throw e;
      }
    }
    // A stream over an (async) iterable, read on demand: an async generator of
    // tokens becomes a response body.
    static from(iterable) {
      const it = iterable[Symbol.asyncIterator] ? iterable[Symbol.asyncIterator]() : iterable[Symbol.iterator]();
      return new ReadableStream({
        async pull(c) {
          const { value, done } = await it.next();
          if (done) c.close(); else c.enqueue(value);
        },
        async cancel(reason) { if (it.return) await it.return(reason); },
      }, { highWaterMark: 0 });
    }
  }
  class ReadableStreamDefaultReader {
    constructor(stream) {
      if (!(stream instanceof ReadableStream)) throw new TypeError("a reader needs a ReadableStream");
      if (stream._reader) throw new TypeError("the stream is locked to a reader");
      stream._reader = this;
      this._stream = stream;
    }
    read() {
      if (!this._stream) return Promise.reject(new TypeError("read: the reader was released"));
      return this._stream._read();
    }
    cancel(reason) {
      if (!this._stream) return Promise.reject(new TypeError("cancel: the reader was released"));
      return this._stream._cancel(reason);
    }
    releaseLock() {
      if (this._stream) { this._stream._reader = null; this._stream = null; }
    }
  }
  class WritableStream {
    constructor(sink = {}) {
      this._sink = sink || {};
      this._writer = null;
      this._chain = Promise.resolve(this._sink.start ? this._sink.start({ error: () => {} }) : undefined);
    }
    get locked() { return this._writer !== null; }
    getWriter() {
      if (this._writer) throw new TypeError("the stream is locked to a writer");
      const stream = this;
      const sink = this._sink;
      // Writes run one after another, in order.
      const then = (f) => (stream._chain = stream._chain.then(f));
      return (this._writer = {
        ready: Promise.resolve(),
        write: (chunk) => then(() => sink.write && sink.write(chunk)),
        close: () => then(() => sink.close && sink.close()),
        abort: (reason) => Promise.resolve(sink.abort && sink.abort(reason)),
        releaseLock: () => { stream._writer = null; },
      });
    }
  }
  class TransformStream {
    constructor(transformer = {}) {
      let out;
      this.readable = new ReadableStream({ start: (c) => { out = c; } });
      const controller = Object.freeze({
        enqueue: (chunk) => out.enqueue(chunk),
        error: (e) => out.error(e),
        terminate: () => out.close(),
        get desiredSize() { return out.desiredSize; },
      });
      const started = transformer.start ? transformer.start(controller) : undefined;
      this.writable = new WritableStream({
        start: () => started,
        write: (chunk) => transformer.transform ? transformer.transform(chunk, controller) : controller.enqueue(chunk),
        close: async () => {
          if (transformer.flush) await transformer.flush(controller);
          out.close();
        },
        abort: (e) => out.error(e),
      });
    }
  }
  class TextEncoderStream extends TransformStream {
    constructor() { super({ transform: (chunk, c) => c.enqueue(utf8Encode(chunk)) }); }
    get encoding() { return "utf-8"; }
  }
  class TextDecoderStream extends TransformStream {
    constructor(label = "utf-8") {
      const decoder = new TextDecoder(label);
      super({
        transform: (chunk, c) => { const text = decoder.decode(chunk, { stream: true }); if (text) c.enqueue(text); },
        flush: (c) => { const text = decoder.decode(); if (text) c.enqueue(text); },
      });
    }
    get encoding() { return "utf-8"; }
  }
  // A chunk as bytes: what a byte stream carries.
  function chunkToBytes(chunk) {
    if (typeof chunk === "string") return utf8Encode(chunk);
    if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
    if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    throw new TypeError("a body stream's chunks must be Uint8Array (or strings)");
  }
  async function readAll(stream) {
    const parts = [];
    let length = 0;
    for await (const chunk of stream) {
      const bytes = chunkToBytes(chunk);
      parts.push(bytes);
      length += bytes.length;
    }
    const all = new Uint8Array(length);
    let at = 0;
    for (const p of parts) { all.set(p, at); at += p.length; }
    return all;
  }

  // ---- Headers, bodies, Request, Response ------------------------------------
  class Headers {
    constructor(init) {
      this._map = new Map();
      if (init instanceof Headers) init.forEach((v, k) => this.append(k, v));
      else if (Array.isArray(init)) for (const [k, v] of init) this.append(k, v);
      else if (init && typeof init === "object") for (const k of Object.keys(init)) this.append(k, init[k]);
    }
    append(name, value) {
      const k = String(name).toLowerCase();
      const v = String(value);
      this._map.set(k, this._map.has(k) ? `${this._map.get(k)}, ${v}` : v);
    }
    set(name, value) { this._map.set(String(name).toLowerCase(), String(value)); }
    get(name) { const v = this._map.get(String(name).toLowerCase()); return v === undefined ? null : v; }
    has(name) { return this._map.has(String(name).toLowerCase()); }
    delete(name) { this._map.delete(String(name).toLowerCase()); }
    forEach(f) { for (const [k, v] of this._map) f(v, k, this); }
    entries() { return this._map.entries(); }
    keys() { return this._map.keys(); }
    values() { return this._map.values(); }
    [Symbol.iterator]() { return this._map.entries(); }
  }

  // A body is kept as text, bytes or a stream, whichever it arrived as.
  function toBody(body) {
    if (body === undefined || body === null) return null;
    if (body instanceof ReadableStream) return { stream: body };
    if (typeof body === "string") return { text: body };
    if (body instanceof ArrayBuffer) return { bytes: new Uint8Array(body) };
    if (ArrayBuffer.isView(body)) return { bytes: new Uint8Array(body.buffer, body.byteOffset, body.byteLength) };
    if (body instanceof URLSearchParams) return { text: body.toString() };
    return { text: String(body) };
  }
  // A fetched response's body stays with the host until it is read: whole
  // (`text()`, `json()`, …: one host call) or, through `.body`, chunk by chunk
  // as it arrives (an LLM's tokens). Each read first lets the event loop turn
  // (see `turn`), so a stream relaying it sends what it has first.
  const restOf = async (b) => { await turn(); return unwireBody(call("fetch_rest", b.fetched)); };
  const fetchedStream = (id) => new ReadableStream({
    async pull(c) {
      await turn();
      const w = call("fetch_read", id);
      if (w === null) c.close();
      else c.enqueue(b64Bytes(w.b64));
    },
    cancel() { call("fetch_cancel", id); },
  });
  // A body as text or bytes, read to its end: a stream read here, a fetched
  // body read whole by the host.
  const wholeBody = async (b) => !b ? b : "stream" in b ? { bytes: await readAll(b.stream) }
    : "fetched" in b ? toBody(await restOf(b)) : b;
  // The body as a stream, made once (a fetched body's stream reads the host's).
  function streamOf(b) {
    if (!("stream" in b)) b.stream = fetchedStream(b.fetched);
    return b.stream;
  }

  class Body {
    _initBody(body) { this._body = toBody(body); this.bodyUsed = false; }
    _take() {
      if (this.bodyUsed) throw new TypeError("body already used");
      this.bodyUsed = true;
      return this._body;
    }
    async text() {
      const b = await wholeBody(this._take());
      return !b ? "" : "text" in b ? b.text : utf8Decode(b.bytes);
    }
    async json() { return JSON.parse(await this.text()); }
    async arrayBuffer() {
      const b = await wholeBody(this._take());
      const bytes = !b ? new Uint8Array(0) : "bytes" in b ? b.bytes : utf8Encode(b.text);
      return bytes.slice().buffer;
    }
    async bytes() { return new Uint8Array(await this.arrayBuffer()); }
    // The body as a stream (one chunk for a body that is not one).
    get body() {
      const b = this._body;
      if (!b) return null;
      if ("stream" in b || "fetched" in b) return streamOf(b);
      if (!this._bodyStream) {
        const bytes = "bytes" in b ? b.bytes : utf8Encode(b.text);
        this._bodyStream = new ReadableStream({ start(c) { c.enqueue(bytes); c.close(); } });
      }
      return this._bodyStream;
    }
  }
  // What a body was built from, to build another body from it.
  const bodySource = (b) => !b ? null : "text" in b ? b.text : "bytes" in b ? b.bytes : streamOf(b);

  class Request extends Body {
    constructor(input, init = {}) {
      super();
      const from = input instanceof Request ? input : null;
      this.url = from ? from.url : new URL(String(input)).href;
      this.method = String(init.method || (from ? from.method : "GET")).toUpperCase();
      this.headers = new Headers(init.headers || (from ? from.headers : undefined));
      this._initBody(init.body !== undefined ? init.body : from ? bodySource(from._body) : null);
      if (this._body && (this.method === "GET" || this.method === "HEAD")) throw new TypeError("a GET or HEAD request has no body");
    }
    clone() { return new Request(this); }
  }

  class Response extends Body {
    constructor(body = null, init = {}) {
      super();
      this.status = init.status === undefined ? 200 : Number(init.status);
      if (!Number.isInteger(this.status) || this.status < 200 || this.status > 599) throw new RangeError(`status ${init.status} is not in 200..599`);
      this.statusText = init.statusText || "";
      this.headers = new Headers(init.headers);
      this._initBody(body);
      if (typeof body === "string" && !this.headers.has("content-type")) this.headers.set("content-type", "text/plain;charset=UTF-8");
    }
    get ok() { return this.status >= 200 && this.status < 300; }
    static json(data, init = {}) {
      const r = new Response(JSON.stringify(data), init);
      r.headers.set("content-type", "application/json");
      return r;
    }
    static error() { const r = new Response(null, { status: 500 }); return r; }
    static redirect(url, status = 302) { return new Response(null, { status, headers: { location: String(url) } }); }
  }

  function wireBody(b) {
    if (!b) return null;
    return "text" in b ? { text: b.text } : { b64: btoa(bytesToBinary(b.bytes)) };
  }
  // A request body to send whole (fetch sends no streams: it is read first).
  function unwireBody(w) {
    if (!w) return null;
    return "text" in w ? w.text : b64Bytes(w.b64);
  }
  const wireHeaders = (h) => Array.from(h.entries());

  // One turn of the event loop before a call that waits on the network: the
  // host blocks this thread while it waits, so a chunk a streamed response
  // enqueued just before (an agent's "thought") goes out first, as it would
  // in Deno, where the wait is asynchronous.
  const turn = () => new Promise((resolve) => setTimeout(resolve, 0));

  async function fetch(input, init = {}) {
    await turn();
    const req = input instanceof Request && Object.keys(init).length === 0 ? input : new Request(input, init);
    const body = wireBody(await wholeBody(req._body));
    const answer = call("fetch", { url: req.url, method: req.method, headers: wireHeaders(req.headers), body });
    const res = new Response(null, { status: answer.status, headers: answer.headers });
    // The host keeps the body until it is read (see restOf); an older host answers it whole.
    res._body = answer.body && "fetched" in answer.body ? { fetched: answer.body.fetched } : toBody(unwireBody(answer.body));
    res.url = req.url;
    return res;
  }

  // ---- timers -----------------------------------------------------------------
  // Captured now: a function replacing Math.max must not break the host's timers.
  const { max: mathMax, min: mathMin } = Math;
  const toNumber = Number;
  const timers = new Map();
  let nextTimerId = 1;
  function setTimeout(fn, ms = 0, ...args) {
    if (typeof fn !== "function") throw new TypeError("setTimeout needs a function");
    const id = nextTimerId++;
    const delay = mathMin(mathMax(0, toNumber(ms) || 0), 2147483647); // browsers' cap
    timers.set(id, { at: call("now") + delay, fn, args });
    return id;
  }
  function clearTimeout(id) { timers.delete(id); }

  // ---- console, crypto, Deno, Spine ------------------------------------------
  const show = (v) => typeof v === "string" ? v : (() => { try { return JSON.stringify(v); } catch (_) { return String(v); } })();
  const log = (level) => (...args) => call("log", { level, message: args.map(show).join(" ") });
  const console = { log: log("info"), info: log("info"), debug: log("debug"), warn: log("warn"), error: log("error") };

  // crypto.subtle: SHA digests and HMAC with raw keys, computed by the host in
  // Rust (a script HMAC is slow, and its compare not constant-time).
  const toBytes = (data, what) => {
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    throw new TypeError(`crypto.subtle: ${what} must be an ArrayBuffer or a typed array`);
  };
  const b64of = (data, what) => btoa(bytesToBinary(toBytes(data, what)));
  const bufferOf = (b64) => b64Bytes(b64).buffer;
  const nameOf = (algorithm) => String(typeof algorithm === "string" ? algorithm : algorithm && algorithm.name);
  const notSupported = (what) =>
    new HostError(`crypto.subtle: ${what} is not supported (HMAC with raw keys, SHA digests)`, "NotSupportedError");
  // A key's bytes stay here, out of the function's reach unless it kept them.
  const rawKeys = new WeakMap();
  class CryptoKey {
    constructor(algorithm, extractable, usages) {
      this.type = "secret";
      this.algorithm = algorithm;
      this.extractable = extractable;
      this.usages = usages;
      Object.freeze(this);
    }
  }
  const hmacKey = (algorithm, key, usage) => {
    if (nameOf(algorithm).toUpperCase() !== "HMAC") throw notSupported(`algorithm ${nameOf(algorithm)}`);
    const raw = rawKeys.get(key);
    if (raw === undefined) throw new TypeError("crypto.subtle: not a key from importKey");
    if (!key.usages.includes(usage)) throw new HostError(`crypto.subtle: the key may not ${usage}`, "InvalidAccessError");
    return raw;
  };
  const subtle = Object.freeze({
    async digest(algorithm, data) {
      return bufferOf(call("subtle", { op: "digest", hash: nameOf(algorithm), data: b64of(data, "data") }));
    },
    async importKey(format, keyData, algorithm, extractable, usages) {
      if (format !== "raw") throw notSupported(`key format ${format}`);
      if (nameOf(algorithm).toUpperCase() !== "HMAC") throw notSupported(`algorithm ${nameOf(algorithm)}`);
      const hash = algorithm.hash;
      if (!hash) throw new TypeError("crypto.subtle.importKey: HMAC needs a hash");
      const key = new CryptoKey({ name: "HMAC", hash: { name: nameOf(hash).toUpperCase() } },
        Boolean(extractable), Object.freeze([...(usages || [])]));
      rawKeys.set(key, b64of(keyData, "keyData"));
      return key;
    },
    async sign(algorithm, key, data) {
      const raw = hmacKey(algorithm, key, "sign");
      return bufferOf(call("subtle", { op: "sign", hash: key.algorithm.hash.name, key: raw, data: b64of(data, "data") }));
    },
    async verify(algorithm, key, signature, data) {
      const raw = hmacKey(algorithm, key, "verify");
      return call("subtle", { op: "verify", hash: key.algorithm.hash.name, key: raw,
        signature: b64of(signature, "signature"), data: b64of(data, "data") });
    },
    // Deno's: equal length and bytes, in constant time.
    timingSafeEqual: (a, b) => call("subtle", { op: "equal", a: b64of(a, "a"), b: b64of(b, "b") }),
  });

  const crypto = {
    subtle,
    randomUUID: () => call("uuid"),
    getRandomValues(array) {
      const bytes = b64Bytes(call("random", array.byteLength));
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(bytes);
      return array;
    },
  };

  // The context a handler gets as its second argument (and as globalThis.Spine).
  let user;
  const context = Object.freeze({
    // Read on first use: the prelude runs before the invocation is known.
    get user() { return user === undefined ? (user = call("user")) : user; },
    secrets: Object.freeze({
      get: (name) => call("secret", String(name)),
      // Stores the user's own secret (an OAuth connector saving a refreshed token).
      set: async (name, value) => { call("secret_set", { name: String(name), value: String(value) }); },
    }),
    // PostgREST's operations as the caller (see the README); no SQL text.
    db: Object.freeze({
      rpc: async (fn, args = {}) => call("db", { op: "rpc", function: String(fn), args }),
      select: async (table, options = {}) => call("db", { op: "select", table: String(table), ...options }),
      insert: async (table, rows) => call("db", { op: "insert", table: String(table), rows }),
      update: async (table, values, options = {}) => call("db", { op: "update", table: String(table), values, ...options }),
      delete: async (table, options = {}) => call("db", { op: "delete", table: String(table), ...options }),
      query: async () => {
        throw new HostError("ctx.db takes no SQL text: use ctx.db.rpc, select, insert, update or delete", "TypeError");
      },
    }),
    emit: async (type, data = {}, subject = null) => call("emit", { type: String(type), data, subject }),
    // Act for a user from now on (manifest users.act_as and that user's consent):
    // a public webhook, once it has verified whose call this is.
    actAs: async (id) => (user = call("act_as", String(id))),
  });

  let served = null;
  const Deno = Object.freeze({
    serve(a, b) {
      const handler = typeof a === "function" ? a : typeof b === "function" ? b : a && a.handler;
      if (typeof handler !== "function") throw new TypeError("Deno.serve needs a handler function");
      served = handler;
      return { finished: new Promise(() => {}), shutdown: async () => {} };
    },
    env: Object.freeze({ get: (name) => call("secret", String(name)) }),
  });

  // Supabase's embeddings API for functions: `new Supabase.ai.Session(model)`
  // then `await session.run(text)` → number[] (or texts → number[][]). The
  // host's own embeddings API and model (the entities' vectors' model), for a
  // manifest that declares "ai": {"embeddings": true}. Options such as
  // mean_pool / normalize are the API's business and are ignored.
  class Session {
    constructor(model) {
      if (typeof model !== "string" || model === "") throw new TypeError("Supabase.ai.Session needs a model name");
      this.model = model;
    }
    async run(input, _options = {}) {
      const one = typeof input === "string";
      if (!one && !(Array.isArray(input) && input.every((t) => typeof t === "string"))) {
        throw new TypeError("Session.run: input must be a string or an array of strings");
      }
      await turn();
      const vectors = call("embed", { model: this.model, input: one ? [input] : input });
      return one ? vectors[0] : vectors;
    }
  }
  const Supabase = Object.freeze({ ai: Object.freeze({ Session }) });

  // ---- what the host calls ----------------------------------------------------
  let responseReader = null;
  const internals = {
    // Picks the handler: Deno.serve(handler) or `export default { fetch }`.
    handler(defaultExport) {
      if (served) return served;
      if (defaultExport && typeof defaultExport.fetch === "function") return defaultExport.fetch.bind(defaultExport);
      if (typeof defaultExport === "function") return defaultExport;
      throw new TypeError("the module neither calls Deno.serve(handler) nor exports default { fetch }");
    },
    // Runs the handler on the request the host passed; resolves to the wire response.
    async dispatch(handler, wire) {
      const req = new Request(wire.url, { method: wire.method, headers: wire.headers, body: unwireBody(wire.body) });
      let res = await handler(req, context);
      if (!(res instanceof Response)) {
        throw new TypeError(`the handler returned ${res === undefined ? "undefined" : typeof res}, not a Response`);
      }
      if (res._body && ("stream" in res._body || "fetched" in res._body)) {
        // The host pumps it with `read` below, sending each chunk as it comes
        // (a fetched response returned as it is: relayed as it arrives).
        const stream = streamOf(res._body);
        if (res.bodyUsed || stream.locked) throw new TypeError("the response's body stream was already read");
        responseReader = stream.getReader();
        return JSON.stringify({ status: res.status, headers: wireHeaders(res.headers), stream: true });
      }
      return JSON.stringify({ status: res.status, headers: wireHeaders(res.headers), body: wireBody(res._body) });
    },
    // The response stream's next chunk as a fresh Uint8Array (a copy, so the
    // function cannot change or detach it while the host reads it) or a string;
    // undefined at the end.
    async read() {
      const { value, done } = await responseReader.read();
      if (done) return undefined;
      if (typeof value === "string") return value;
      if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return chunkToBytes(value).slice();
      throw new TypeError("a response stream's chunks must be Uint8Array (or strings)");
    },
    // The reader went away: the stream's cancel callback runs.
    async cancel() { await responseReader.cancel("the client went away"); },
    // Milliseconds until the earliest timer, or -1 when none is set.
    nextTimer() {
      let at = Infinity;
      for (const t of timers.values()) at = mathMin(at, t.at);
      return at === Infinity ? -1 : mathMax(0, at - call("now"));
    },
    fireTimers() {
      const now = call("now");
      for (const [id, t] of Array.from(timers)) {
        if (t.at <= now) { timers.delete(id); t.fn(...t.args); }
      }
    },
  };

  Object.assign(global, {
    TextEncoder, TextDecoder, atob, btoa, URL, URLSearchParams, Headers, Request, Response,
    ReadableStream, ReadableStreamDefaultReader, WritableStream, TransformStream,
    TextEncoderStream, TextDecoderStream,
    fetch, setTimeout, clearTimeout, console, crypto, Deno, Supabase, Spine: context,
    queueMicrotask: (fn) => { Promise.resolve().then(fn); },
    structuredClone: (v) => JSON.parse(JSON.stringify(v)),
  });
  Object.defineProperty(global, "__spine", { value: Object.freeze(internals), enumerable: false });
})(globalThis);
