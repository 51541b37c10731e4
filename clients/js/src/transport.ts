// The HTTP side of the client: one request, its retries, and the streaming
// acquire. It speaks node:http directly rather than fetch because a waiting
// acquire that is given up must half-close its connection (see
// streamAcquireOnce): fetch can only close it whole, and then a grant the
// server wrote in that instant is lost and lives out its TTL.

import * as http from "node:http";
import * as https from "node:https";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { errorFor, MutexdError, ServerError, statusOfCode, UnavailableError } from "./errors.js";

/** RetryPolicy bounds the retries of calls that certainly did not reach the server and of 503 answers. */
export interface RetryPolicy {
  /** Tries in all; 1 disables retries. Default 6. */
  attempts?: number;
  /** The first retry's delay in milliseconds. Default 100. */
  minBackoffMs?: number;
  /** The cap of every delay in milliseconds. Default 2000. */
  maxBackoffMs?: number;
}

/** An answer: status, parsed JSON body, and when the request was sent (performance.now()). */
export interface Answer {
  status: number;
  body: any;
  requestId: string;
  sentAt: number;
}

/** What a streaming acquire may be told while it waits. */
export interface StreamHooks {
  /** Called once, when the server has the request in its queue (or answered it). */
  onEnqueued(): void;
  /** Called with the place in line (1 = next) whenever it moves. */
  onQueued?(position: number): void;
  /** Releases a grant that arrived after the caller gave up. */
  releaseOrphan(grant: any): Promise<void>;
}

/** A request that failed before the server could have seen any of it: always safe to retry. */
class NotSentError extends Error {}

/** How long a given-up acquire waits for the server's last word after half-closing. */
const halfCloseGraceMs = 5000;
/** Error bodies and lists are small; anything bigger is not mutexd talking. */
const maxBody = 8 << 20;

/** redactURL returns u as text with any password replaced, for messages. */
export function redactURL(u: URL): string {
  if (!u.password) return u.href.replace(/\/$/, "");
  const c = new URL(u.href);
  c.password = "xxxxx";
  return c.href.replace(/\/$/, "");
}

/** Transport sends the client's requests to one server. */
export class Transport {
  /** The server's URL with any password redacted: the only form that goes into messages. */
  readonly shown: string;
  readonly #url: URL;
  readonly #mod: typeof http | typeof https;
  readonly #agent: http.Agent;
  readonly #authorization: string | undefined;
  readonly #userinfo: string | undefined;
  readonly #retry: Required<RetryPolicy>;

  constructor(url: string, token: string | undefined, retry: RetryPolicy = {}) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      // Never echo the text: it may hold a password.
      throw new MutexdError("mutexd: the server URL is not a valid URL", { code: "invalid_url" });
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new MutexdError(`mutexd: the server URL must be http:// or https://, got ${u.protocol}`, { code: "invalid_url" });
    }
    this.#url = u;
    this.shown = redactURL(u);
    this.#mod = u.protocol === "https:" ? https : http;
    this.#agent = new this.#mod.Agent({ keepAlive: true, maxSockets: 64 });
    this.#authorization = token ? `Bearer ${token}` : undefined;
    this.#userinfo = u.username ? `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}` : undefined;
    this.#retry = {
      attempts: Math.max(1, retry.attempts ?? 6),
      minBackoffMs: retry.minBackoffMs ?? 100,
      maxBackoffMs: retry.maxBackoffMs ?? 2000,
    };
  }

  /** close ends the pooled keep-alive connections. */
  close(): void {
    this.#agent.destroy();
  }

  /**
   * call sends one request and returns its 2xx answer, or throws the typed
   * error of any other. Dial errors, a reused keep-alive connection the
   * server had closed, and 503 answers are retried; nothing else is.
   */
  async call(method: string, path: string, body?: object, signal?: AbortSignal): Promise<Answer> {
    return this.withRetries(signal, () => this.callOnce(method, path, body, signal));
  }

  /**
   * acquire sends a streaming acquire and returns the grant. Only attempts
   * that certainly did not reach the server, and 503 answers, are retried,
   * unless mayRetryUnknown (the request carries a request_id the server
   * deduplicates).
   */
  async acquire(path: string, body: object, hooks: StreamHooks, signal: AbortSignal | undefined, mayRetryUnknown: boolean): Promise<Answer> {
    return this.withRetries(signal, () => this.streamAcquireOnce(path, body, hooks, signal), mayRetryUnknown);
  }

  private async withRetries(signal: AbortSignal | undefined, once: () => Promise<Answer>, mayRetryUnknown = false): Promise<Answer> {
    let firstCutAt: number | undefined; // when the first attempt that got no answer was sent
    for (let attempt = 0; ; attempt++) {
      signal?.throwIfAborted();
      const last = attempt + 1 >= this.#retry.attempts;
      let retryAfterMs = 0;
      const sentAt = performance.now();
      try {
        const a = await once();
        // A retry of a cut attempt is answered as that attempt (its lease,
        // or its place in the queue, counted from its arrival): measure the
        // lease from when it was sent, so that the deadline stays a lower
        // bound of the server's.
        if (firstCutAt !== undefined) a.sentAt = Math.min(a.sentAt, firstCutAt);
        return a;
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (err instanceof NotSentError || (mayRetryUnknown && !(err instanceof MutexdError))) {
          if (!(err instanceof NotSentError)) firstCutAt ??= sentAt;
          if (last) throw this.unreachable(err, err instanceof NotSentError ? "unreachable" : "no_answer");
        } else if (err instanceof MutexdError && err.status === 503 && err.code !== "fences_exhausted") {
          if (last) throw err;
          retryAfterMs = err.retryAfterMs;
        } else if (err instanceof MutexdError) {
          throw err;
        } else {
          throw this.unreachable(err, "no_answer");
        }
      }
      await sleep(this.backoff(attempt, retryAfterMs), signal);
    }
  }

  /** backoff is the delay before retry n (0-based): random in [d/2, d], d = min(max, min·2ⁿ), at least Retry-After (capped). */
  private backoff(n: number, retryAfterMs: number): number {
    const { minBackoffMs, maxBackoffMs } = this.#retry;
    const d = Math.min(maxBackoffMs, minBackoffMs * 2 ** Math.min(n, 30));
    return Math.max(d / 2 + Math.random() * (d / 2), Math.min(retryAfterMs, maxBackoffMs));
  }

  /**
   * unreachable is the error of a request that got no answer: code
   * "unreachable" when it certainly never reached the server, "no_answer"
   * when it may have (the connection broke after it was sent).
   */
  private unreachable(err: unknown, code: "unreachable" | "no_answer" = "unreachable"): UnavailableError {
    const cause = err instanceof NotSentError ? err.cause : err;
    const why = cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : String(cause);
    const msg = code === "unreachable"
      ? `mutexd at ${this.shown} could not be reached: ${why}`
      : `no answer from mutexd at ${this.shown}: ${why} (the request may have reached the server)`;
    return new UnavailableError(msg, { code, status: 0, cause });
  }

  private options(method: string, path: string, headers: http.OutgoingHttpHeaders, agent: http.Agent | false): http.RequestOptions {
    const base = this.#url.pathname.replace(/\/$/, "");
    if (this.#authorization) headers["authorization"] = this.#authorization;
    return {
      protocol: this.#url.protocol,
      hostname: this.#url.hostname.replace(/^\[|\]$/g, ""),
      port: this.#url.port || undefined,
      path: base + path,
      method,
      headers,
      agent,
      auth: this.#authorization ? undefined : this.#userinfo,
    };
  }

  /** start sends a request and settles with its response or a classified error. */
  private start(opts: http.RequestOptions, payload: string | undefined, signal: AbortSignal | undefined,
    onAbort: (req: http.ClientRequest, connected: boolean) => void): Promise<{ res: http.IncomingMessage; req: http.ClientRequest; sentAt: number; socket: () => Socket | undefined }> {
    return new Promise((resolve, reject) => {
      const sentAt = performance.now();
      const req = this.#mod.request(opts);
      let connected = false;
      let sock: Socket | undefined;
      req.on("socket", (s: Socket) => {
        sock = s;
        if (!s.connecting) connected = true;
        else s.once("connect", () => { connected = true; });
      });
      const abort = () => onAbort(req, connected);
      signal?.addEventListener("abort", abort, { once: true });
      req.on("error", (err) => {
        signal?.removeEventListener("abort", abort);
        if (signal?.aborted) return reject(signal.reason);
        // Nothing was sent before the connection was made; a reused
        // keep-alive connection that the server had closed reset before
        // any answer (Go's server closes connections only between requests).
        const stale = req.reusedSocket && ((err as NodeJS.ErrnoException).code === "ECONNRESET" || (err as NodeJS.ErrnoException).code === "EPIPE");
        if (!connected || stale) return reject(new NotSentError("not sent", { cause: err }));
        reject(err);
      });
      req.on("response", (res) => {
        res.on("close", () => signal?.removeEventListener("abort", abort));
        resolve({ res, req, sentAt, socket: () => sock });
      });
      req.end(payload);
    });
  }

  private async callOnce(method: string, path: string, body: object | undefined, signal: AbortSignal | undefined): Promise<Answer> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: http.OutgoingHttpHeaders = { accept: "application/json" };
    if (payload !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = Buffer.byteLength(payload);
    }
    const { res, sentAt } = await this.start(this.options(method, path, headers, this.#agent), payload, signal,
      (req) => req.destroy(signal?.reason));
    const text = await readBody(res, signal);
    return this.answer(res, text, sentAt);
  }

  /** answer turns a complete response into an Answer, or throws its typed error. */
  private answer(res: http.IncomingMessage, text: string, sentAt: number): Answer {
    const status = res.statusCode ?? 0;
    const requestId = header(res, "x-request-id");
    let body: any = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    if (status >= 200 && status < 300) {
      if (body === undefined || body === null || typeof body !== "object") {
        throw new ServerError(`malformed answer from mutexd at ${this.shown} (${status})`, { code: "malformed", status, requestId });
      }
      return { status, body, requestId, sentAt };
    }
    const retryAfterMs = parseRetryAfter(header(res, "retry-after"));
    if (body && typeof body.error === "string" && body.error) {
      throw errorFor(status, body.error, String(body.message ?? ""), { requestId, retryAfterMs, waiters: Number(body.waiters) || 0 });
    }
    throw errorFor(status, `http_${status}`, http.STATUS_CODES[status] ?? "unexpected status", { requestId, retryAfterMs });
  }

  /**
   * streamAcquireOnce sends one acquire with Accept: text/event-stream on a
   * connection of its own and reads its events. Giving up while it waits
   * (signal) half-closes the connection: the server reads EOF, cancels the
   * request and drops the waiter, exactly as for a disconnect; but an
   * answer it had already written still arrives, and a grant in it is
   * released before the abort is reported. The connection is never reused.
   */
  private async streamAcquireOnce(path: string, body: object, hooks: StreamHooks, signal: AbortSignal | undefined): Promise<Answer> {
    const payload = JSON.stringify(body);
    const headers: http.OutgoingHttpHeaders = {
      accept: "text/event-stream",
      "content-type": "application/json",
      "content-length": Buffer.byteLength(payload),
    };
    let grace: NodeJS.Timeout | undefined;
    const giveUp = (req: http.ClientRequest, connected: boolean) => {
      const s = req.socket;
      if (!connected || !s) {
        req.destroy(signal?.reason); // nothing reached the server
        return;
      }
      s.end();
      grace = setTimeout(() => req.destroy(signal?.reason), halfCloseGraceMs);
      grace.unref();
    };
    let enqueued = false;
    const enqueue = () => {
      if (!enqueued) {
        enqueued = true;
        hooks.onEnqueued();
      }
    };
    try {
      const started = await this.start(this.options("POST", path, headers, false), payload, signal, giveUp);
      const { res, sentAt } = started;
      const status = res.statusCode ?? 0;
      const type = header(res, "content-type");
      if (status !== 200 || !type.startsWith("text/event-stream")) {
        // A plain answer: an error before the stream started, or a server
        // that does not stream.
        const text = await readBody(res, undefined);
        enqueue();
        const a = this.answer(res, text, sentAt);
        if (signal?.aborted) {
          if (typeof a.body.token === "string") await hooks.releaseOrphan(a.body);
          throw signal.reason;
        }
        return a;
      }
      const requestId = header(res, "x-request-id");
      let final: { name: string; data: any } | undefined;
      for await (const ev of readEvents(res)) {
        if (ev.name === "queued") {
          enqueue();
          hooks.onQueued?.(Number(ev.data?.position) || 0);
          continue;
        }
        enqueue();
        final = ev;
        break;
      }
      res.destroy();
      if (final?.name === "granted") {
        if (signal?.aborted) {
          await hooks.releaseOrphan(final.data);
          throw signal.reason;
        }
        if (!final.data || typeof final.data.token !== "string") {
          throw new ServerError(`malformed grant from mutexd at ${this.shown}`, { code: "malformed", status: 200, requestId });
        }
        return { status: 200, body: final.data, requestId, sentAt };
      }
      if (signal?.aborted) throw signal.reason;
      if (!final) throw new Error("the event stream ended without an outcome");
      const code = final.name;
      throw errorFor(statusOfCode[code] ?? 500, code, String(final.data?.message ?? code), {
        requestId,
        waiters: Number(final.data?.waiters) || 0,
        // A stream's outcome has no Retry-After header: these are the
        // server's fixed values (unavailable's is at least this).
        retryAfterMs: code === "unavailable" || code === "too_many_waiters" || code === "too_many_keys" ? 1000 : 0,
      });
    } catch (err) {
      if (signal?.aborted && !(err instanceof MutexdError)) throw signal.reason;
      throw err;
    } finally {
      enqueue();
      if (grace) clearTimeout(grace);
    }
  }
}

/** readEvents yields the named events of a Server-Sent Events body. */
async function* readEvents(res: http.IncomingMessage): AsyncGenerator<{ name: string; data: any }> {
  res.setEncoding("utf8");
  let buf = "";
  for await (const chunk of res as AsyncIterable<string>) {
    buf += chunk;
    if (buf.length > maxBody) throw new Error("event too large");
    let i: number;
    while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i).replace(/^\r?\n\r?\n/, "");
      let name = "message";
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length === 0) continue; // a comment (heartbeat) or retry:
      let parsed: any;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        parsed = undefined;
      }
      yield { name, data: parsed };
    }
  }
}

function readBody(res: http.IncomingMessage, signal: AbortSignal | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    res.on("data", (b: Buffer) => {
      size += b.length;
      if (size > maxBody) res.destroy(new Error("answer too large"));
      else parts.push(b);
    });
    res.on("end", () => resolve(Buffer.concat(parts).toString("utf8")));
    res.on("error", (err) => reject(signal?.aborted ? signal.reason : err));
    res.on("aborted", () => reject(signal?.aborted ? signal.reason : new Error("answer cut off")));
  });
}

function header(res: http.IncomingMessage, name: string): string {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] ?? "" : v ?? "";
}

/** parseRetryAfter reads Retry-After (delay seconds or an HTTP date) as milliseconds; 0 when absent or past. */
export function parseRetryAfter(v: string): number {
  v = v.trim();
  if (!v) return 0;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? 0 : Math.max(0, t - Date.now());
}

/** sleep resolves after ms, or rejects with signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
