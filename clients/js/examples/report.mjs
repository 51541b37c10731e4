// @ts-check
import { acquire, TimeoutError } from "mutexd";

// Cron runs this on every machine; only one builds the report at a time.
try {
  const lease = await acquire("report:daily", { ttl: "30s", wait: 0 });
  lease.keepAlive(); // renews every 10 s until released or lost
  try {
    console.log(`building the report with fence ${lease.fence}`);
    lease.signal.throwIfAborted(); // check between steps: the lease may be lost
    await lease.release("ok");
  } catch (err) {
    await lease.release("failed").catch(() => {});
    throw err;
  }
} catch (err) {
  if (!(err instanceof TimeoutError)) throw err;
  console.log("another machine is building it");
}
