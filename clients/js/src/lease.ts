// A granted lock and the bookkeeping that decides whether it is still ours.
//
// The server's clock and ours differ, so expires_at is never compared with
// Date.now(). Each grant and renewal instead gives a safe lower bound of the
// server's expiry on the local monotonic clock (performance.now()),
// measured from when its request was sent; the lease counts as lost a
// safety margin before that bound passes without a successful renewal, or
// at once when a renewal is refused. This is the Go client's rule (see
// client/DESIGN.md in the repository).

import { performance } from "node:perf_hooks";
import { LeaseLostError, MutexdError, NotHolderError } from "./errors.js";
import { sleep } from "./transport.js";

/** A duration: milliseconds as a number, or Go duration text ("30s", "1500ms", "2m"). */
export type Duration = number | string;

/** Outcome is what a release tells the next holder (and, when "failed", an on_error=stop queue). */
export type Outcome = "ok" | "failed";

/**
 * Previous says how the key's last lease before this one ended: the one
 * this grant followed or, on a key that had gone idle, the one the server
 * still remembers (lock.remember_outcome).
 */
export interface Previous {
  fence: number;
  outcome: "released" | "failed" | "expired" | "forced";
  /** When it ended (RFC 3339, the server's clock); absent from older servers. */
  ended_at?: string;
}

/** The calls a Lease makes on its client; implemented by Client. */
export interface LeaseCalls {
  renewCall(key: string, body: object, signal?: AbortSignal): Promise<{ body: any; sentAt: number }>;
  releaseCall(key: string, body: object, signal?: AbortSignal): Promise<void>;
}

/**
 * safetyMarginMs is how long before its deadline a lease of the given TTL
 * that could not be renewed counts as lost: a tenth of the TTL, at most 5 s.
 * It absorbs clock rate differences and gives the holder time to stop
 * before the server may grant the key to another.
 */
export function safetyMarginMs(ttlMs: number): number {
  return Math.min(ttlMs / 10, 5000);
}

/** durationText renders a Duration for the API; numbers are milliseconds. */
export function durationText(d: Duration, name: string, positive: boolean): string {
  if (typeof d === "string") return d;
  if (typeof d !== "number" || !Number.isFinite(d) || d < 0 || (positive && d <= 0)) {
    throw new MutexdError(`mutexd: ${name} must be ${positive ? "a positive" : "a non-negative"} number of milliseconds or duration text, got ${String(d)}`,
      { code: `invalid_${name}`, status: 0 });
  }
  return `${Math.round(d)}ms`;
}

/**
 * Lease is a granted lock. `token` is its secret: only it renews or
 * releases the lease. Pass `fence` to the store you protect and have it
 * reject writes with a fence lower than the highest it has seen.
 */
export class Lease {
  /** The locked key. */
  readonly key: string;
  /** The lease's secret. Never logged by this package. */
  readonly token: string;
  /** Strictly increases with every grant on the server (below 2^53, so exact in a number). */
  readonly fence: number;
  /** The owner name the server recorded. */
  readonly owner: string;
  /** How long the acquire waited in the queue, in milliseconds. */
  readonly waitedMs: number;
  /** How the lease before this one ended; null when the key was free. */
  readonly previous: Previous | null;
  /** Aborts, with a LeaseLostError as its reason, when the lease is lost. */
  readonly signal: AbortSignal;

  readonly #calls: LeaseCalls;
  readonly #lostCtl = new AbortController();
  #ttl: number;
  #expires: Date;
  #deadline: number; // performance.now() ms: lower bound of the server's expiry
  #timer: NodeJS.Timeout | undefined;
  #ended = false; // released, or a release is under way
  #renewErr: unknown;
  #renewing: Promise<unknown> = Promise.resolve();
  #keepAliveStop: AbortController | undefined;
  #keepAliveDone: Promise<void> | undefined;

  /** @internal Built by Client.acquire from a grant requested at sentAt (performance.now()). */
  constructor(calls: LeaseCalls, grant: any, sentAt: number) {
    this.#calls = calls;
    this.key = String(grant.key);
    this.token = String(grant.token);
    this.fence = Number(grant.fence);
    this.owner = String(grant.owner ?? "");
    this.waitedMs = Number(grant.waited_ms) || 0;
    this.previous = grant.previous ?? null;
    this.#ttl = Number(grant.ttl_ms) || 0;
    this.#expires = new Date(grant.expires_at);
    this.signal = this.#lostCtl.signal;
    // The server granted no earlier than the request's arrival plus the
    // time it waited, so it expires no earlier than this.
    this.#deadline = sentAt + this.waitedMs + this.#ttl;
    this.#arm();
    // The token stays out of console.log, JSON and error reports.
    Object.defineProperty(this, "token", { enumerable: false });
  }

  /** When the server expires the lease unless renewed, on the server's clock, as of the last grant or renewal. */
  get expiresAt(): Date {
    return this.#expires;
  }

  /** The lease's time to live in milliseconds, as last granted or renewed. */
  get ttlMs(): number {
    return this.#ttl;
  }

  /** Why the lease was lost, or undefined while it is not. A released lease is not lost. */
  get lost(): LeaseLostError | undefined {
    return this.signal.aborted ? (this.signal.reason as LeaseLostError) : undefined;
  }

  #arm(): void {
    if (this.#timer) clearTimeout(this.#timer);
    const wait = this.#deadline - safetyMarginMs(this.#ttl) - performance.now();
    this.#timer = setTimeout(() => this.#checkDeadline(), Math.max(0, wait));
    this.#timer.unref();
  }

  #checkDeadline(): void {
    if (this.#ended || this.signal.aborted) return;
    if (this.#deadline - safetyMarginMs(this.#ttl) > performance.now()) return this.#arm();
    const last = this.#renewErr instanceof Error ? `; last attempt: ${this.#renewErr.message}` : "";
    this.#lose(`no renewal succeeded before the lease's deadline${last}`, this.#renewErr);
  }

  #lose(why: string, cause?: unknown): void {
    if (this.#ended || this.signal.aborted) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#keepAliveStop?.abort();
    this.#lostCtl.abort(new LeaseLostError(`lease lost: ${this.key}: ${why}`, { code: "lease_lost", cause }));
  }

  /**
   * renew extends the lease to `ttl` from now (default: its own TTL). A
   * shorter ttl brings the expiry, and the loss, closer. A refusal
   * (NotHolderError) means the lease is gone and fires `signal`. Renewals
   * of one lease run one at a time.
   */
  renew(opts: { ttl?: Duration; signal?: AbortSignal } = {}): Promise<void> {
    const ttl = opts.ttl === undefined ? undefined : durationText(opts.ttl, "ttl", true);
    const run = this.#renewing.then(() => this.#renewOnce(ttl, opts.signal));
    this.#renewing = run.catch(() => undefined);
    return run;
  }

  async #renewOnce(ttl: string | undefined, signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    const sent = performance.now();
    try {
      const a = await this.#calls.renewCall(this.key, ttl === undefined ? { token: this.token } : { token: this.token, ttl }, signal);
      this.#ttl = Number(a.body.ttl_ms) || this.#ttl;
      this.#expires = new Date(a.body.expires_at);
      this.#renewErr = undefined;
      // The server's expiry is now this renewal's arrival plus its TTL,
      // even when that is sooner than before.
      this.#deadline = a.sentAt + this.#ttl;
      if (!this.#ended && !this.signal.aborted) this.#arm();
    } catch (err) {
      if (err instanceof NotHolderError) {
        this.#lose(`renewal refused: ${err.message}`, err);
      } else {
        this.#renewErr = err;
        // A renewal that got no answer may still have shortened the lease
        // on the server; an answer, or a request that never left, did not.
        const answered = err instanceof MutexdError && err.code !== "no_answer";
        if (ttl !== undefined && !answered && !this.#ended && !this.signal.aborted) {
          const ms = parseTTL(ttl);
          if (ms !== undefined && sent + ms < this.#deadline) {
            this.#deadline = sent + ms;
            this.#arm();
          }
        }
      }
      throw err;
    }
  }

  /**
   * keepAlive renews the lease in the background every third of its TTL
   * (sooner after a failed attempt) until it is released or lost, or
   * `signal` aborts. Two renewals may fail before the lease is given up.
   * Calls after the first do nothing.
   */
  keepAlive(signal?: AbortSignal): void {
    if (this.#keepAliveDone || this.#ended || this.signal.aborted) return;
    const stop = new AbortController();
    this.#keepAliveStop = stop;
    signal?.addEventListener("abort", () => stop.abort(), { once: true });
    this.#keepAliveDone = this.#keepAliveLoop(stop.signal);
  }

  async #keepAliveLoop(stop: AbortSignal): Promise<void> {
    let failing = false;
    while (!stop.aborted && !this.#ended && !this.signal.aborted) {
      const ttl = this.#ttl;
      const next = failing
        ? performance.now() + Math.min(Math.max(ttl / 20, 20), 1000)
        : this.#deadline - ttl + ttl / 3; // a third of the TTL after the last successful request
      try {
        await sleep(Math.max(0, next - performance.now()), stop);
      } catch {
        return;
      }
      // A renewal still in flight at the deadline is as good as failed.
      const limit = new AbortController();
      const t = setTimeout(() => limit.abort(new Error("the renewal took until the lease's deadline")),
        Math.max(0, this.#deadline - safetyMarginMs(ttl) - performance.now()));
      const onStop = () => limit.abort(stop.reason);
      stop.addEventListener("abort", onStop, { once: true });
      try {
        await this.renew({ signal: limit.signal });
        failing = false;
      } catch {
        failing = true;
      } finally {
        clearTimeout(t);
        stop.removeEventListener("abort", onStop);
      }
    }
  }

  /**
   * release ends the lease: the next waiter is granted at once. Outcome
   * "failed" tells the next holder (previous.outcome) the work failed, and
   * on an on_error=stop key every waiter queued at that moment is answered
   * with AbortedError. It stops keepAlive first. NotHolderError means the
   * lease had already ended (expired or force-released).
   */
  async release(outcome: Outcome = "ok", opts: { signal?: AbortSignal } = {}): Promise<void> {
    if (outcome !== "ok" && outcome !== "failed") {
      throw new MutexdError(`mutexd: outcome must be "ok" or "failed", got ${String(outcome)}`, { code: "invalid_outcome" });
    }
    // Stop renewing, and wait for a renewal in flight to be abandoned, so
    // that its refusal cannot be taken for a loss once the release is in.
    this.#keepAliveStop?.abort();
    await this.#keepAliveDone;
    try {
      await this.#calls.releaseCall(this.key, { token: this.token, outcome }, opts.signal);
    } catch (err) {
      if (err instanceof NotHolderError) this.#lose(`release refused: ${err.message}`, err);
      throw err;
    }
    this.#ended = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  /** toJSON leaves the token out: a lease written to a log must not hand it on. */
  toJSON(): object {
    return { key: this.key, fence: this.fence, owner: this.owner, waitedMs: this.waitedMs, previous: this.previous, ttlMs: this.#ttl, expiresAt: this.#expires };
  }

  /** @internal Whether release succeeded. */
  get released(): boolean {
    return this.#ended;
  }
}

/** parseTTL reads the milliseconds of duration text we produced or the caller gave; undefined when unsure. */
function parseTTL(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return undefined;
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] ?? "s"] ?? 1000;
  return Number(m[1]) * unit;
}
