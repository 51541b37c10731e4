// Compiled with tsc --noEmit (npm run typecheck) against the package's
// declarations: what a TypeScript user writes must type-check.
import {
  AbortedError, acquire, Client, createMutex, inspect, LeaseLostError, list, mutex, MutexdError, TimeoutError,
  type Lease, type LockInfo, type TaskContext,
} from "mutexd";

const m = createMutex({ url: "http://127.0.0.1:7070", token: process.env.MUTEXD_TOKEN, ttl: 10_000, owner: "worker-1" });

async function typed(): Promise<void> {
  const n: number = await m("k", async () => 42);
  const s: string = await m("k", () => "sync", { onError: "stop", wait: "5s" });
  const f: number = await mutex("k", async ({ signal, lease }: TaskContext) => {
    signal.throwIfAborted();
    return lease.fence;
  });
  const lease: Lease = await acquire("k", { ttl: "30s", wait: 0, onQueued: (p: number) => void p });
  await lease.renew({ ttl: 5000 });
  lease.keepAlive();
  const when: Date = lease.expiresAt;
  await lease.release("failed");
  const info: LockInfo = await inspect("k");
  const keys: string[] = (await list({ prefix: "k" })).locks.map((l) => l.key);
  const c = new Client();
  await c.forceRelease("k");
  try {
    await m("k", () => undefined);
  } catch (err) {
    if (err instanceof TimeoutError || err instanceof AbortedError || err instanceof LeaseLostError) {
      const code: string = err.code;
      const status: number = err.status;
      void code, status;
    } else if (err instanceof MutexdError) {
      void err.requestId;
    }
  }
  void n, s, f, when, info, keys;
}
void typed;

// @ts-expect-error onError takes "continue" or "stop"
void m("k", () => 1, { onError: "halt" });
