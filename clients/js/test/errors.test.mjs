// Every API error code reaches the caller as its typed error, with the
// server's code, message and status; retries; credentials never appear in
// errors.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { inspect as show } from "node:util";
import { after, before, describe, test } from "node:test";
import {
  AbortedError, Client, ForbiddenError, InvalidRequestError, MutexdError, NotFoundError, NotHeldError,
  NotHolderError, TimeoutError, TooManyKeysError, TooManyWaitersError, UnauthorizedError, UnavailableError,
} from "mutexd";
import { errorFor } from "../dist/errors.js";
import { eventually, startDaemon } from "./daemon.mjs";

const ADMIN = "admin-token-0123456789";
const CLIENT = "client-token-0123456789";

let open, authd, limited;
before(async () => {
  [open, authd, limited] = await Promise.all([
    startDaemon(),
    startDaemon({ MUTEXD_AUTH_TOKENS: CLIENT, MUTEXD_AUTH_ADMIN_TOKENS: ADMIN }),
    startDaemon({ MUTEXD_LIMITS_MAX_KEYS: "2", MUTEXD_LIMITS_MAX_WAITERS_PER_KEY: "1", MUTEXD_LIMITS_ADMIN_RESERVE: "0" }),
  ]);
});
after(() => Promise.all([open, authd, limited].map((d) => d?.stop())));

/** expect checks that p rejects with an error of class cls carrying code and status. */
async function expect(p, cls, code, status) {
  await assert.rejects(p, (err) => {
    assert.ok(err instanceof cls, `${err?.name}: ${err?.message}, want ${cls.name}`);
    assert.ok(err instanceof MutexdError);
    assert.equal(err.name, cls.name);
    assert.equal(err.code, code);
    assert.equal(err.status, status);
    assert.ok(err.message.length > 0);
    return true;
  });
}

describe("API errors", () => {
  test("423 timeout, 409 not_holder, 404 not_held", async () => {
    const c = new Client({ url: open.url });
    const lease = await c.acquire("e:held");
    await expect(c.acquire("e:held", { wait: 0 }), TimeoutError, "timeout", 423);
    await lease.release();
    await expect(lease.renew(), NotHolderError, "not_holder", 409);
    await expect(lease.release(), NotHolderError, "not_holder", 409);
    await expect(c.forceRelease("e:free"), NotHeldError, "not_held", 404);
    c.close();
  });

  test("409 aborted", async () => {
    const c = new Client({ url: open.url });
    const lease = await c.acquire("e:stop", { onError: "stop" });
    const waiting = expect(c.acquire("e:stop", { onError: "stop" }), AbortedError, "aborted", 409);
    await eventually("a waiter", async () => (await c.inspect("e:stop")).waiters === 1);
    await lease.release("failed");
    await waiting;
    c.close();
  });

  test("400s are InvalidRequestError with the server's code", async () => {
    const c = new Client({ url: open.url });
    await expect(c.acquire("e:x", { ttl: "forever" }), InvalidRequestError, "invalid_ttl", 400);
    await expect(c.acquire("e:x", { wait: "soon" }), InvalidRequestError, "invalid_wait", 400);
    await expect(c.acquire("e:x", { owner: "o".repeat(200) }), InvalidRequestError, "invalid_owner", 400);
    await expect(c.acquire("bad\u0001key"), InvalidRequestError, "invalid_key", 400);
    await expect(c.list({ limit: 5000 }), InvalidRequestError, "invalid_limit", 400);
    await expect(c.acquire("e:x", { requestId: "a b" }), InvalidRequestError, "invalid_request_id", 400);
    const lease = await c.acquire("e:x");
    await expect(lease.renew({ ttl: "2h" }), InvalidRequestError, "invalid_ttl", 400);
    await lease.release();
    c.close();
  });

  test("the client refuses what it cannot send", async () => {
    const c = new Client({ url: open.url });
    await assert.rejects(c.acquire("k", { ttl: -1 }), (e) => e instanceof MutexdError && e.code === "invalid_ttl");
    await assert.rejects(c.acquire("k", { onError: "explode" }), (e) => e instanceof MutexdError && e.code === "invalid_on_error");
    await assert.rejects(c.acquire(""), (e) => e instanceof MutexdError && e.code === "invalid_key");
    assert.throws(() => new Client({ url: "ftp://x" }), (e) => e instanceof MutexdError && e.code === "invalid_url");
    c.close();
  });

  test("401 unauthorized, 403 forbidden", async () => {
    const none = new Client({ url: authd.url, token: "" });
    await expect(none.acquire("e:a"), UnauthorizedError, "unauthorized", 401);
    const user = new Client({ url: authd.url, token: CLIENT });
    const lease = await user.acquire("e:a");
    await expect(user.list(), ForbiddenError, "forbidden", 403);
    await expect(user.forceRelease("e:a"), ForbiddenError, "forbidden", 403);
    const admin = new Client({ url: authd.url, token: ADMIN });
    assert.deepEqual((await admin.list()).locks.map((l) => l.key), ["e:a"]);
    await lease.release();
    for (const c of [none, user, admin]) c.close();
  });

  test("429 too_many_waiters and too_many_keys carry Retry-After", async () => {
    const c = new Client({ url: limited.url });
    const lease = await c.acquire("l:1");
    const ac = new AbortController();
    const waiting = c.acquire("l:1", { signal: ac.signal }).catch(() => undefined);
    await eventually("a waiter", async () => (await c.inspect("l:1")).waiters === 1);
    await assert.rejects(c.acquire("l:1"), (e) => e instanceof TooManyWaitersError && e.status === 429 && e.retryAfterMs === 1000);
    const second = await c.acquire("l:2");
    await expect(c.acquire("l:3"), TooManyKeysError, "too_many_keys", 429);
    ac.abort();
    await waiting;
    await Promise.all([lease.release(), second.release()]);
    c.close();
  });

  test("404 not_found for a URL that does not lead to the API", async () => {
    const c = new Client({ url: open.url + "/not-mutexd" });
    await expect(c.inspect("k"), NotFoundError, "not_found", 404);
    c.close();
  });

  test("codes without a live trigger map by the one table", () => {
    for (const [status, code, cls] of [
      [503, "unavailable", UnavailableError], [503, "too_many_requests", UnavailableError],
      [503, "fences_exhausted", UnavailableError], [400, "invalid_body", InvalidRequestError],
      [413, "body_too_large", InvalidRequestError], [429, "too_many_subscribers", MutexdError],
      [500, "internal", MutexdError], [502, "http_502", MutexdError],
    ]) {
      const e = errorFor(status, code, "Some sentence.");
      assert.ok(e instanceof cls, `${code}: ${e.name}`);
      assert.equal(e.code, code);
      assert.equal(e.status, status);
      assert.equal(e.message, `Some sentence (${status} ${code})`);
    }
  });
});

describe("retries", () => {
  test("503 unavailable is retried until the server accepts acquires", async () => {
    const [d, long] = await Promise.all([
      startDaemon({ MUTEXD_LOCK_RESTART_GRACE: "1s" }),
      startDaemon({ MUTEXD_LOCK_RESTART_GRACE: "1h" }),
    ]);
    try {
      const c = new Client({ url: d.url, retry: { attempts: 8, minBackoffMs: 50, maxBackoffMs: 1000 } });
      const lease = await c.acquire("grace");
      assert.ok(lease.fence > 0);
      await lease.release();
      c.close();
      const once = new Client({ url: long.url, retry: { attempts: 1 } });
      await expect(once.acquire("grace"), UnavailableError, "unavailable", 503);
      once.close();
    } finally {
      await Promise.all([d.stop(), long.stop()]);
    }
  });

  test("an unreachable server is UnavailableError with code unreachable, after the retries", async () => {
    const port = await freePort();
    const c = new Client({ url: `http://127.0.0.1:${port}`, retry: { attempts: 3, minBackoffMs: 10, maxBackoffMs: 20 } });
    await expect(c.acquire("k"), UnavailableError, "unreachable", 0);
    await expect(c.inspect("k"), UnavailableError, "unreachable", 0);
  });
});

describe("credentials stay out of errors", () => {
  test("a password in the URL is redacted", async () => {
    const port = await freePort();
    const c = new Client({ url: `http://user:pa55-w0rd-secret@127.0.0.1:${port}`, token: "bearer-secret-0123456789", retry: { attempts: 1 } });
    assert.equal(c.url.includes("secret"), false);
    assert.equal(show(c, { depth: 10, showHidden: false }).includes("secret"), false, show(c));
    await assert.rejects(c.acquire("k"), (err) => {
      for (const text of [err.message, err.stack, show(err, { depth: 10 }), JSON.stringify(err)]) {
        assert.equal(text.includes("pa55-w0rd-secret"), false, text);
      }
      assert.match(err.message, /user:xxxxx@127\.0\.0\.1/);
      return true;
    });
    assert.throws(() => new Client({ url: "http://user:pa55-w0rd-secret@[bad" }), (err) => !show(err).includes("secret"));
  });

  test("bearer and lease tokens appear in no error or inspection", async () => {
    const wrong = "wrong-token-but-secret-42";
    const c = new Client({ url: authd.url, token: wrong });
    await assert.rejects(c.acquire("k"), (err) => {
      assert.ok(err instanceof UnauthorizedError);
      assert.equal(show(err, { depth: 10 }).includes(wrong), false);
      return true;
    });
    const user = new Client({ url: authd.url, token: CLIENT });
    const lease = await user.acquire("tok");
    assert.equal(show(lease, { depth: 10 }).includes(lease.token), false);
    assert.equal(JSON.stringify(lease).includes(lease.token), false);
    await lease.release();
    await assert.rejects(lease.renew(), (err) => {
      assert.ok(err instanceof NotHolderError);
      assert.equal(show(err, { depth: 10 }).includes(lease.token), false);
      assert.equal(show(err, { depth: 10 }).includes(CLIENT), false);
      return true;
    });
    c.close();
    user.close();
  });
});

/** freePort returns a loopback port nobody listens on (it was free a moment ago). */
function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
