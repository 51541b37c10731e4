// mutex and the lease's life, against a real daemon: FIFO across processes,
// independent keys, onError "stop" across processes, lost leases, giving up
// a wait.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AbortedError, Client, createMutex, LeaseLostError, TimeoutError } from "mutexd";
import { eventually, runChild, startDaemon } from "./daemon.mjs";

let d;
let c;
let dir;
before(async () => {
  d = await startDaemon();
  c = new Client({ url: d.url, owner: "test" });
  dir = mkdtempSync(join(tmpdir(), "mutexd-js-test-"));
});
after(async () => {
  c?.close();
  await d?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const waiters = async (key) => (await c.inspect(key)).waiters;

describe("mutex", () => {
  test("returns the task's value and rethrows its error; sync tasks work", async () => {
    const mutex = createMutex({ url: d.url });
    assert.equal(await mutex("value", async () => 42), 42);
    assert.equal(await mutex("value", () => "sync"), "sync");
    const boom = new Error("boom");
    let next;
    await assert.rejects(mutex("value", async ({ lease }) => {
      next = c.acquire("value");
      await eventually("a waiter", async () => (await waiters("value")) === 1);
      next.fence = lease.fence;
      throw boom;
    }), (err) => err === boom);
    // The failure was reported to the server: the next holder sees it.
    const lease = await next;
    const { ended_at: endedAt, ...previous } = lease.previous;
    assert.deepEqual(previous, { fence: next.fence, outcome: "failed" });
    assert.ok(Date.parse(endedAt) > 0, `previous.ended_at ${endedAt}`);
    await lease.release();
    mutex.client.close();
  });

  test("tasks on one key run one at a time in call order within a process", async () => {
    const mutex = createMutex({ url: d.url });
    const order = [];
    let inside = 0;
    const runs = Array.from({ length: 12 }, (_, i) => mutex("order", async () => {
      inside++;
      assert.equal(inside, 1, "two tasks inside at once");
      order.push(i);
      await new Promise((r) => setTimeout(r, 2));
      inside--;
    }));
    await Promise.all(runs);
    assert.deepEqual(order, Array.from({ length: 12 }, (_, i) => i));
    mutex.client.close();
  });

  test("different keys are independent", async () => {
    const mutex = createMutex({ url: d.url });
    let release;
    const bStarted = new Promise((r) => { release = r; });
    // a waits for b to start: a deadlock if the keys serialized each other.
    const a = mutex("par:a", () => Promise.race([bStarted,
      new Promise((_, j) => setTimeout(() => j(new Error("key b never ran while a held its lock")), 3000))]));
    const b = mutex("par:b", async () => { release(); return "b"; });
    assert.deepEqual(await Promise.all([a, b]), [undefined, "b"]);
    mutex.client.close();
  });

  test("FIFO across two Node processes on one key", async () => {
    const key = "fifo", log = join(dir, "fifo.log");
    writeFileSync(log, "");
    const holder = await c.acquire(key);
    const env = { MUTEXD_URL: d.url, MUTEXD_TOKEN: "" };
    const a = runChild({ key, log, tasks: [{ name: "a1", holdMs: 20 }, { name: "a2", holdMs: 20 }, { name: "a3" }] }, env);
    await eventually("a's three waiters", async () => (await waiters(key)) === 3);
    const b = runChild({ key, log, tasks: [{ name: "b1", holdMs: 20 }, { name: "b2" }] }, env);
    await eventually("b's two waiters", async () => (await waiters(key)) === 5);
    const info = await c.inspect(key);
    assert.equal(info.queue.length, 5);
    await holder.release();
    const [ra, rb] = await Promise.all([a.done, b.done]);
    assert.deepEqual(ra.map((r) => r.value), ["a1", "a2", "a3"]);
    assert.deepEqual(rb.map((r) => r.value), ["b1", "b2"]);
    const lines = readFileSync(log, "utf8").trim().split("\n");
    assert.deepEqual(lines.map((l) => l.split(" ").slice(0, 2).join(" ")),
      ["a1 start", "a1 end", "a2 start", "a2 end", "a3 start", "a3 end", "b1 start", "b1 end", "b2 start", "b2 end"]);
    const fences = lines.filter((l) => l.includes("start")).map((l) => Number(l.split(" ")[2]));
    assert.deepEqual(fences, [...fences].sort((x, y) => x - y), "fences grow with every grant");
  });

  test('onError "stop": a failing task aborts the waiters of other processes', async () => {
    const key = "stop", log = join(dir, "stop.log");
    writeFileSync(log, "");
    const mutex = createMutex({ url: d.url });
    let child;
    const failure = new Error("charge failed");
    const first = mutex(key, async () => {
      child = runChild({ key, log, onError: "stop", tasks: [{ name: "s1" }, { name: "s2" }] }, { MUTEXD_URL: d.url });
      await eventually("the child's two waiters", async () => (await waiters(key)) === 2);
      throw failure;
    }, { onError: "stop" });
    await assert.rejects(first, (err) => err === failure);
    const results = await child.done;
    assert.deepEqual(results.map((r) => [r.error, r.code, r.status]), [["AbortedError", "aborted", 409], ["AbortedError", "aborted", 409]]);
    assert.equal(readFileSync(log, "utf8"), "", "no aborted task ran");
    // Later calls are served normally.
    assert.equal(await mutex(key, () => "after", { onError: "stop" }), "after");
    mutex.client.close();
  });

  test('onError "stop" within one process rejects the queued calls with AbortedError', async () => {
    const mutex = createMutex({ url: d.url });
    const ran = [];
    const first = mutex("stop-local", async () => {
      await eventually("two waiters", async () => (await waiters("stop-local")) === 2);
      throw new Error("first failed");
    }, { onError: "stop" });
    const second = assert.rejects(mutex("stop-local", () => ran.push(2), { onError: "stop" }), AbortedError);
    const third = assert.rejects(mutex("stop-local", () => ran.push(3), { onError: "stop" }), AbortedError);
    await assert.rejects(first, /first failed/);
    await second;
    await third;
    assert.deepEqual(ran, []);
    mutex.client.close();
  });

  test("a force-released lease aborts the task's signal; mutex rejects with LeaseLostError after the task settles", async () => {
    const mutex = createMutex({ url: d.url, ttl: 1000 });
    let settled = false;
    const t0 = Date.now();
    const run = mutex("lost", async ({ signal, lease }) => {
      await c.forceRelease("lost");
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("the signal never fired")), 3000);
        signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); });
      });
      assert.ok(signal.reason instanceof LeaseLostError);
      assert.equal(lease.lost, signal.reason);
      settled = true;
      return "finished anyway";
    });
    await assert.rejects(run, (err) => err instanceof LeaseLostError && /renewal refused/.test(err.message));
    assert.ok(settled, "mutex rejected before the task settled");
    // Found at the first renewal, a third of the TTL in.
    assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
    mutex.client.close();
  });

  test("a lease that cannot be renewed is lost a safety margin before its deadline", async () => {
    const own = await startDaemon();
    const mutex = createMutex({ url: own.url, ttl: 1000, retry: { attempts: 1 } });
    try {
      const t0 = performance.now();
      let firedAt;
      const run = mutex("paused", async ({ signal }) => {
        own.proc.kill("SIGSTOP"); // renewals now go unanswered
        await new Promise((resolve) => signal.addEventListener("abort", resolve));
        firedAt = performance.now() - t0;
        own.proc.kill("SIGCONT");
      });
      await assert.rejects(run, (err) => err instanceof LeaseLostError && /deadline/.test(err.message));
      // Deadline 1000 ms after the acquire was sent, margin 100 ms: never
      // earlier than 900 ms (the upper bound allows for a loaded machine's
      // late timers).
      assert.ok(firedAt >= 900 && firedAt < 1300, `lost after ${firedAt} ms, want 900 ms`);
    } finally {
      own.proc.kill("SIGCONT");
      mutex.client.close();
      await own.stop();
    }
  });

  test("the lease is renewed while the task runs longer than its TTL", async () => {
    const mutex = createMutex({ url: d.url, ttl: 1000 });
    const fence = await mutex("long", async ({ lease, signal }) => {
      await new Promise((r) => setTimeout(r, 1600));
      assert.equal(signal.aborted, false);
      return lease.fence;
    });
    assert.equal(typeof fence, "number");
    mutex.client.close();
  });
});

describe("waiting", () => {
  test("aborting a wait leaves the queue and rejects with the signal's reason", async () => {
    const holder = await c.acquire("abort");
    const ac = new AbortController();
    let position;
    const waiting = c.acquire("abort", { signal: ac.signal, onQueued: (p) => { position = p; } });
    await eventually("the waiter is queued", async () => position === 1);
    assert.equal(await waiters("abort"), 1);
    const reason = new Error("gave up");
    ac.abort(reason);
    await assert.rejects(waiting, (err) => err === reason);
    await eventually("the waiter left the queue", async () => (await waiters("abort")) === 0, 2000);
    await holder.release();
    assert.equal((await c.inspect("abort")).held, false, "a lease was left behind");
  });

  test("a mutex call honours its signal while waiting, and its task never runs", async () => {
    const holder = await c.acquire("abort-mutex");
    const ac = new AbortController();
    let ran = false;
    const run = c.mutex("abort-mutex", () => { ran = true; }, { signal: ac.signal });
    await eventually("queued", async () => (await waiters("abort-mutex")) === 1);
    ac.abort();
    await assert.rejects(run, { name: "AbortError" });
    await eventually("the waiter left the queue", async () => (await waiters("abort-mutex")) === 0, 2000);
    await holder.release();
    assert.equal(ran, false);
  });

  test("giving up as the lock is handed over never leaves a lease behind", async () => {
    // Release and abort race; a grant the server wrote as the waiter gave
    // up must reach the client (the connection is only half-closed) and be
    // released, so the key is free at once, not after the 60 s TTL.
    for (let i = 0; i < 40; i++) {
      const holder = await c.acquire("race", { ttl: 60000 });
      const ac = new AbortController();
      let queued;
      const isQueued = new Promise((r) => { queued = r; });
      const waiting = c.acquire("race", { ttl: 60000, signal: ac.signal, onQueued: queued })
        .catch((err) => assert.equal(err.name, "AbortError", String(err)));
      await isQueued;
      const rel = holder.release();
      setTimeout(() => ac.abort(), i % 4); // around the hand-over
      await rel;
      const lease = await waiting;
      if (lease) await lease.release();
      await eventually(`round ${i}: the key is free`, async () => !(await c.inspect("race")).held, 1000);
    }
  });

  test("wait: 0 is a try-lock", async () => {
    const holder = await c.acquire("try");
    await assert.rejects(c.acquire("try", { wait: 0 }), (err) => err instanceof TimeoutError && err.waiters === 0);
    await holder.release();
  });
});
