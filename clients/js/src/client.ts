// The client: acquire, inspect, list, force-release, and mutex, the
// drop-in for an in-process keyed mutex.

import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { LeaseLostError, MutexdError } from "./errors.js";
import { type Duration, durationText, Lease, type LeaseCalls, type Outcome } from "./lease.js";
import { type RetryPolicy, Transport } from "./transport.js";

/** The default server: the sidecar on loopback. */
export const DEFAULT_URL = "http://127.0.0.1:7070";

/** OnError is a key's failure policy: with "stop", a holder that fails aborts every waiter queued behind it. */
export type OnError = "continue" | "stop";

/** ClientOptions configures a Client. Every field is optional. */
export interface ClientOptions {
  /** The server, e.g. "http://127.0.0.1:7070" (a path prefix is kept). Default: MUTEXD_URL, else MUTEXD_ADDR, else DEFAULT_URL. */
  url?: string;
  /** Bearer token sent with every call. Default: MUTEXD_TOKEN. */
  token?: string;
  /** Lease TTL of acquires that name none (default: the server's lock.default_ttl, 30 s). */
  ttl?: Duration;
  /** How long acquires that name none wait in the queue (default: the server's lock.default_wait, 30 s). */
  wait?: Duration;
  /** Owner name shown by inspection and the server's logs. Default: "<hostname>:<pid>". */
  owner?: string;
  /** Retries of calls that never reached the server and of 503 answers. */
  retry?: RetryPolicy;
  /**
   * Send a fresh request_id with every acquire (default true), so that one
   * whose answer was lost is retried safely. false is for servers older
   * than request_id, which reject the parameter.
   */
  requestIds?: boolean;
}

/** AcquireOptions configures one acquire. */
export interface AcquireOptions {
  /** The lease's time to live (at least 1 s). Default: the client's ttl. */
  ttl?: Duration;
  /** How long to wait in the queue; 0 tries once. Default: the client's wait. */
  wait?: Duration;
  /** Owner name for this lease. Default: the client's owner. */
  owner?: string;
  /** The key's failure policy for this holder ("continue" by default). */
  onError?: OnError;
  /** Gives up waiting: the waiter leaves the server's queue and acquire rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Told the place in line (1 = next) whenever it moves. */
  onQueued?: (position: number) => void;
  /**
   * The acquire's idempotency key (1 to 64 printable ASCII characters).
   * Default: a fresh random one (unless the client was made with
   * `requestIds: false`). Sent again with the same id, an acquire gets the
   * lease the first was granted or the first's place in the queue, so an
   * acquire whose answer was lost is retried with it; a retry after that
   * lease ended rejects with MutexdError code "lease_ended".
   */
  requestId?: string;
}

/** LockInfo is what inspection shows of a key. Tokens are never shown. */
export interface LockInfo {
  key: string;
  held: boolean;
  holder: { owner: string; fence: number; acquiredAt: Date; expiresAt: Date; onError: OnError } | null;
  waiters: number;
  /** The first 100 waiters in order. */
  queue: { owner: string; waitingSince: Date }[];
}

/** LockList is one page of active keys, sorted by key. */
export interface LockList {
  locks: { key: string; held: boolean; owner: string; waiters: number }[];
  /** The cursor of the next page (pass as `after`); "" on the last page. */
  next: string;
}

/** TaskContext is what a mutex task is given. */
export interface TaskContext {
  /** Aborts, with a LeaseLostError, when the lease is lost: stop writing. */
  signal: AbortSignal;
  /** The lease, for its fence. */
  lease: Lease;
}

/** MutexOptions configures one mutex call. */
export interface MutexOptions extends Omit<AcquireOptions, "requestId"> {
  /** "stop": if this task throws, every task queued behind it on the key (in any process) is rejected with AbortedError. */
  onError?: OnError;
}

/** MutexFn runs task while holding the lock on key; see Client.mutex. */
export type MutexFn = <T>(key: string, task: (ctx: TaskContext) => T | PromiseLike<T>, options?: MutexOptions) => Promise<T>;

/** How long the release at the end of mutex may take. */
const releaseTimeoutMs = 10000;

function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : v;
}

/** Client talks to one mutexd server. One per process is enough; it is safe to share. */
export class Client {
  /** The server's URL, with any password redacted. */
  readonly url: string;
  readonly #transport: Transport;
  readonly #defaults: { ttl?: Duration; wait?: Duration; owner: string; requestIds: boolean };
  /**
   * enqueued holds, per key, the moment this client's latest acquire on it
   * reached the server's queue. The next acquire on that key is sent only
   * then, so that within a process the server queues acquires in call order
   * (separate connections could otherwise arrive in any order).
   */
  readonly #enqueued = new Map<string, Promise<void>>();
  readonly #calls: LeaseCalls;

  constructor(opts: ClientOptions = {}) {
    this.#transport = new Transport(opts.url ?? env("MUTEXD_URL") ?? env("MUTEXD_ADDR") ?? DEFAULT_URL,
      opts.token ?? env("MUTEXD_TOKEN"), opts.retry);
    this.url = this.#transport.shown;
    this.#defaults = { ttl: opts.ttl, wait: opts.wait, owner: opts.owner ?? `${hostname()}:${process.pid}`.slice(0, 128), requestIds: opts.requestIds ?? true };
    this.#calls = {
      renewCall: (key, body, signal) => this.#transport.call("POST", keyPath(key, "/renew"), body, signal),
      releaseCall: async (key, body, signal) => {
        await this.#transport.call("POST", keyPath(key, "/release"), body, signal);
      },
    };
  }

  /** close ends the client's idle keep-alive connections (a process exits without it). */
  close(): void {
    this.#transport.close();
  }

  /**
   * acquire waits in the key's FIFO queue until the lock is granted, the
   * wait passes (TimeoutError), the queue is aborted (AbortedError), or
   * `signal` aborts. Giving up half-closes the waiting connection: the
   * server removes the waiter at once, and a grant that raced with it is
   * released before acquire rejects with the signal's reason, so a given-up
   * acquire never leaves a lease behind. The lease lives for its TTL: renew
   * it with keepAlive or renew, end it with release.
   */
  async acquire(key: string, opts: AcquireOptions = {}): Promise<Lease> {
    const path = keyPath(key, "/acquire");
    const body: Record<string, string> = { owner: opts.owner ?? this.#defaults.owner };
    const ttl = opts.ttl ?? this.#defaults.ttl;
    const wait = opts.wait ?? this.#defaults.wait;
    if (ttl !== undefined) body.ttl = durationText(ttl, "ttl", true);
    if (wait !== undefined) body.wait = durationText(wait, "wait", false);
    if (opts.onError !== undefined) {
      if (opts.onError !== "continue" && opts.onError !== "stop") {
        throw new MutexdError(`mutexd: onError must be "continue" or "stop", got ${String(opts.onError)}`, { code: "invalid_on_error" });
      }
      body.on_error = opts.onError;
    }
    const requestId = opts.requestId ?? (this.#defaults.requestIds ? randomBytes(16).toString("hex") : undefined);
    if (requestId !== undefined) body.request_id = requestId;

    const before = this.#enqueued.get(key);
    let enqueued!: () => void;
    const mine = new Promise<void>((resolve) => { enqueued = resolve; });
    this.#enqueued.set(key, mine);
    mine.then(() => {
      if (this.#enqueued.get(key) === mine) this.#enqueued.delete(key);
    });
    try {
      if (before) await abortable(before, opts.signal);
      const a = await this.#transport.acquire(path, body, {
        onEnqueued: enqueued,
        onQueued: opts.onQueued,
        releaseOrphan: (g) => this.releaseOrphan(key, g),
      }, opts.signal, requestId !== undefined);
      return new Lease(this.#calls, a.body, a.sentAt);
    } catch (err) {
      // The server keeps a given-up waiter with a request_id in its place
      // (and a grant that raced with giving up) for its detach grace, in
      // case the caller comes back: take it back now.
      const unanswered = opts.signal?.aborted || !(err instanceof MutexdError) || err.code === "no_answer";
      if (requestId !== undefined && unanswered) await this.withdraw(key, path, body);
      throw err;
    } finally {
      enqueued();
    }
  }

  /**
   * withdraw sends a given-up acquire again with its request_id and a wait
   * of 1 ms: that takes the waiter's place and times out at once, or claims
   * the grant, which is then released. Best effort: otherwise the server
   * ends either after its detach grace.
   */
  private async withdraw(key: string, path: string, body: Record<string, string>): Promise<void> {
    try {
      const a = await this.#transport.call("POST", path, { ...body, wait: body.wait === "0ms" ? "0ms" : "1ms" }, AbortSignal.timeout(5000));
      if (a.body?.token) await this.releaseOrphan(key, a.body);
    } catch {
      // A timeout (withdrawn), lease_ended, or no answer.
    }
  }

  /** releaseOrphan releases a grant that arrived after its caller gave up (nobody else would). */
  private async releaseOrphan(key: string, grant: any): Promise<void> {
    try {
      await this.#transport.call("POST", keyPath(key, "/release"), { token: String(grant.token), outcome: "ok" }, AbortSignal.timeout(5000));
    } catch {
      // It expires after its TTL.
    }
  }

  /**
   * mutex runs task while holding the lock on key, like an in-process keyed
   * mutex but across every process that uses the same server: tasks on one
   * key run one at a time in FIFO order, keys are independent. It resolves
   * with the task's value or rejects with the task's error. The lease is
   * renewed in the background every third of its TTL; if it is lost, the
   * task's `signal` aborts and, once the task has settled, mutex rejects
   * with LeaseLostError (the task's own error as its cause). A task that
   * throws releases with outcome "failed": under onError "stop" the tasks
   * queued behind it are rejected with AbortedError. If the lock is not
   * granted the task does not run and the acquire's error is thrown.
   */
  async mutex<T>(key: string, task: (ctx: TaskContext) => T | PromiseLike<T>, options: MutexOptions = {}): Promise<T> {
    if (typeof task !== "function") {
      throw new MutexdError("mutexd: mutex needs a task function", { code: "invalid_task" });
    }
    const lease = await this.acquire(key, options);
    lease.keepAlive();
    let value: T | undefined;
    let failed = false;
    let taskErr: unknown;
    try {
      value = await task({ signal: lease.signal, lease });
    } catch (err) {
      failed = true;
      taskErr = err;
    }
    let releaseErr: unknown;
    if (!lease.released) {
      try {
        await lease.release(failed ? "failed" : "ok", { signal: AbortSignal.timeout(releaseTimeoutMs) });
      } catch (err) {
        releaseErr = err;
      }
    }
    const lost = lease.lost;
    if (lost) {
      throw new LeaseLostError(lost.message, { code: lost.code, cause: failed ? taskErr : lost.cause });
    }
    if (failed) throw taskErr;
    if (releaseErr !== undefined) throw releaseErr;
    return value as T;
  }

  /** inspect shows who holds key and who waits, in order (tokens are never shown). */
  async inspect(key: string, opts: { signal?: AbortSignal } = {}): Promise<LockInfo> {
    const { body: b } = await this.#transport.call("GET", keyPath(key, ""), undefined, opts.signal);
    const h = b.holder;
    return {
      key: b.key,
      held: Boolean(b.held),
      holder: h ? { owner: h.owner, fence: h.fence, acquiredAt: new Date(h.acquired_at), expiresAt: new Date(h.expires_at), onError: h.on_error } : null,
      waiters: Number(b.waiters) || 0,
      queue: (b.queue ?? []).map((w: any) => ({ owner: w.owner, waitingSince: new Date(w.waiting_since) })),
    };
  }

  /** list returns one page of active keys (needs an admin token when auth is on). */
  async list(opts: { prefix?: string; limit?: number; after?: string; signal?: AbortSignal } = {}): Promise<LockList> {
    const q = new URLSearchParams();
    if (opts.prefix !== undefined) q.set("prefix", opts.prefix);
    if (opts.limit !== undefined) q.set("limit", String(opts.limit));
    if (opts.after !== undefined) q.set("after", opts.after);
    const qs = q.toString();
    const { body: b } = await this.#transport.call("GET", "/v1/locks" + (qs ? "?" + qs : ""), undefined, opts.signal);
    return { locks: b.locks ?? [], next: b.next ?? "" };
  }

  /** forceRelease ends whoever holds key, as an operator would (admin token when auth is on); NotHeldError if nobody does. */
  async forceRelease(key: string, opts: { signal?: AbortSignal } = {}): Promise<{ key: string; fence: number; heldMs: number }> {
    const { body: b } = await this.#transport.call("DELETE", keyPath(key, ""), undefined, opts.signal);
    return { key: b.key, fence: b.fence, heldMs: b.held_ms };
  }
}

/** keyPath is the API path of key's lock plus suffix; a key is one escaped path segment. */
function keyPath(key: string, suffix: string): string {
  if (typeof key !== "string" || key === "") {
    throw new MutexdError("mutexd: a key must be a non-empty string", { code: "invalid_key" });
  }
  return `/v1/locks/${encodeURIComponent(key)}${suffix}`;
}

/** abortable waits for p, or rejects with signal's reason when it aborts first. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  signal.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** createMutex returns a mutex function backed by a new Client (see Client.mutex), with the client as `.client`. */
export function createMutex(opts: ClientOptions = {}): MutexFn & { client: Client } {
  const client = new Client(opts);
  const fn = (<T>(key: string, task: (ctx: TaskContext) => T | PromiseLike<T>, options?: MutexOptions) =>
    client.mutex(key, task, options)) as MutexFn & { client: Client };
  fn.client = client;
  return fn;
}

let shared: Client | undefined;

/** defaultClient is the module's Client, made on first use from MUTEXD_URL and MUTEXD_TOKEN. */
export function defaultClient(): Client {
  shared ??= new Client();
  return shared;
}

/** mutex is Client.mutex on the default client (MUTEXD_URL, MUTEXD_TOKEN): the one-import drop-in. */
export const mutex: MutexFn = (key, task, options) => defaultClient().mutex(key, task, options);

/** acquire is Client.acquire on the default client. */
export const acquire = (key: string, opts?: AcquireOptions): Promise<Lease> => defaultClient().acquire(key, opts);

/** inspect is Client.inspect on the default client. */
export const inspect = (key: string, opts?: { signal?: AbortSignal }): Promise<LockInfo> => defaultClient().inspect(key, opts);

/** list is Client.list on the default client. */
export const list = (opts?: Parameters<Client["list"]>[0]): Promise<LockList> => defaultClient().list(opts);

export type { Outcome };
