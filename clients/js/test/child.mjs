// A second (third, ...) process for the cross-process tests. It runs tasks
// under the module-level mutex (so MUTEXD_URL is what connects it), all
// started at once in the order given, logs "<name> start" and "<name> end"
// to a shared file, and prints each outcome as JSON.
import { appendFileSync } from "node:fs";
import { mutex } from "mutexd";

const { key, tasks, onError, log, wait } = JSON.parse(process.argv[2]);
const results = await Promise.all(tasks.map(async (t) => {
  try {
    const value = await mutex(key, async ({ lease }) => {
      appendFileSync(log, `${t.name} start ${lease.fence}\n`);
      await new Promise((r) => setTimeout(r, t.holdMs ?? 0));
      appendFileSync(log, `${t.name} end\n`);
      if (t.fail) throw new Error(`${t.name} failed`);
      return t.name;
    }, { onError, wait });
    return { name: t.name, value };
  } catch (err) {
    return { name: t.name, error: err.name, code: err.code, status: err.status };
  }
}));
console.log(JSON.stringify(results));
