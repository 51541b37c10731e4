// Test helpers: a real mutexd on a free loopback port, child processes, and
// bounded polling. The daemon is the binary test/run.mjs built
// (MUTEXD_TEST_BIN).
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/**
 * startDaemon runs mutexd with the given MUTEXD_* settings on 127.0.0.1:0
 * and resolves with { url, proc, stop() } once its start-up log line names
 * the address. The test runner's own MUTEXD_* variables are not passed on.
 */
export async function startDaemon(settings = {}) {
  const bin = process.env.MUTEXD_TEST_BIN;
  if (!bin) throw new Error("MUTEXD_TEST_BIN is not set: run the tests with `npm test` (test/run.mjs builds the daemon)");
  const env = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", MUTEXD_LOG_FORMAT: "json", MUTEXD_UI_ENABLED: "false", ...settings };
  const proc = spawn(bin, ["--listen", "127.0.0.1:0"], { env, stdio: ["ignore", "ignore", "pipe"] });
  const lines = createInterface({ input: proc.stderr });
  const log = [];
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mutexd did not start within 10s:\n${log.join("\n")}`)), 10000);
    proc.once("exit", (code) => { clearTimeout(timer); reject(new Error(`mutexd exited with ${code}:\n${log.join("\n")}`)); });
    lines.on("line", (line) => {
      log.push(line);
      try {
        const rec = JSON.parse(line);
        if (rec.msg === "mutexd started") {
          clearTimeout(timer);
          resolve(rec.addr);
        }
      } catch { /* not JSON */ }
    });
  });
  proc.removeAllListeners("exit");
  return {
    url: `http://${addr}`,
    proc,
    log,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    },
  };
}

/** eventually polls fn (async, truthy when done) every 10 ms for at most ms. */
export async function eventually(what, fn, ms = 5000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * runChild runs test/child.mjs in a new Node process with args (JSON) and
 * env, and resolves with the JSON it prints last on stdout.
 */
export function runChild(args, env = {}, onLine) {
  const p = spawn(process.execPath, [join(here, "child.mjs"), JSON.stringify(args)], {
    env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: p.stdout });
  const out = [];
  lines.on("line", (l) => { out.push(l); onLine?.(l); });
  const done = new Promise((resolve, reject) => {
    const timer = setTimeout(() => { p.kill("SIGKILL"); reject(new Error("child did not finish within 20s")); }, 20000);
    p.on("exit", (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`child exited with ${code}: ${out.join("\n")}`));
      resolve(JSON.parse(out[out.length - 1]));
    });
  });
  return { proc: p, done };
}
