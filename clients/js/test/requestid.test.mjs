// Acquires carry a request_id: a grant whose answer was lost is recovered
// by the retry, and an aborted wait does not keep its place.
import assert from "node:assert/strict";
import { connect, createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { Client, LeaseEndedError, SupersededError } from "mutexd";
import { eventually, startDaemon } from "./daemon.mjs";

let d;
before(async () => { d = await startDaemon(); });
after(() => d?.stop());

/**
 * cuttingProxy forwards TCP to the daemon, but the first connection that
 * carries a grant (a "token" in the server's bytes) is cut before the
 * client sees it: the server granted, the answer is lost.
 */
function cuttingProxy(target) {
  const { hostname, port } = new URL(target);
  let cut = false;
  const acquires = [];
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    client.on("data", (b) => {
      const m = /"request_id":"([^"]+)"/.exec(b.toString());
      if (m) acquires.push(m[1]);
      upstream.write(b);
    });
    upstream.on("data", (b) => {
      if (!cut && b.toString().includes('"token"')) {
        cut = true;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(b);
    });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () =>
    resolve({ url: `http://127.0.0.1:${server.address().port}`, acquires, close: () => server.close() })));
}

describe("request ids", () => {
  test("a grant whose answer was lost is recovered by the retry with the same request_id", async () => {
    const p = await cuttingProxy(d.url);
    const c = new Client({ url: p.url, retry: { attempts: 4, minBackoffMs: 5, maxBackoffMs: 20 } });
    const direct = new Client({ url: d.url });
    try {
      const lease = await c.acquire("cut", { ttl: "1m" });
      assert.equal(p.acquires.length, 2, `acquires sent: ${p.acquires}`);
      assert.match(p.acquires[0], /^[0-9a-f]{32}$/);
      assert.equal(p.acquires[1], p.acquires[0], "the retry carries the same request_id");
      const info = await direct.inspect("cut");
      assert.equal(info.holder?.fence, lease.fence, "the recovered lease is the one the server granted");
      assert.equal(info.waiters, 0);
      await lease.release();
      assert.equal((await direct.inspect("cut")).held, false);
    } finally {
      c.close(); direct.close(); p.close();
    }
  });

  test("the same requestId gets the same lease, and lease_ended once it ended", async () => {
    const c = new Client({ url: d.url });
    try {
      const a = await c.acquire("same", { requestId: "job-1" });
      const b = await c.acquire("same", { requestId: "job-1" });
      assert.equal(b.token, a.token);
      assert.equal(b.fence, a.fence);
      await a.release();
      await assert.rejects(c.acquire("same", { requestId: "job-1" }),
        (err) => err instanceof LeaseEndedError && err.code === "lease_ended" && err.status === 409);
      // Over the streaming acquire too, the new conflicts are typed.
      const h = await c.acquire("sup", { ttl: "1m" });
      const first = c.acquire("sup", { requestId: "job-3", wait: "1m" });
      await eventually("queued", async () => (await c.inspect("sup")).waiters === 1);
      const second = c.acquire("sup", { requestId: "job-3", wait: "1m" });
      await assert.rejects(first, (err) => err instanceof SupersededError && err.status === 409);
      assert.equal((await c.inspect("sup")).waiters, 1, "the second took the first's place");
      await h.release();
      await (await second).release();
    } finally {
      c.close();
    }
  });

  test("an aborted wait with a request_id leaves the queue at once", async () => {
    const c = new Client({ url: d.url });
    try {
      const holder = await c.acquire("leave", { ttl: "1m" });
      const ac = new AbortController();
      const waiting = c.acquire("leave", { wait: "1m", signal: ac.signal });
      await eventually("queued", async () => (await c.inspect("leave")).waiters === 1);
      ac.abort(new Error("given up"));
      await assert.rejects(waiting, /given up/);
      await eventually("the waiter left the queue", async () => (await c.inspect("leave")).waiters === 0, 2000);
      await holder.release();
      assert.equal((await c.inspect("leave")).held, false, "nobody holds the key after the holder let go");
    } finally {
      c.close();
    }
  });
});
