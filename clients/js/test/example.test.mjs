// The README's checkout example is examples/checkout.mjs verbatim, and it
// runs: two processes placing checkouts for one user at once never spend
// the balance twice.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { startDaemon } from "./daemon.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

test("the README shows every example file verbatim", () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/<!-- example: (\S+) -->\n```js\n([\s\S]*?)```\n/g)];
  assert.ok(blocks.length >= 2, "no example blocks found in README.md");
  for (const [, file, code] of blocks) {
    assert.equal(code, readFileSync(join(root, file), "utf8"), `README.md's block for ${file} differs from the file`);
  }
});

let d, dir;
before(async () => {
  d = await startDaemon();
  dir = mkdtempSync(join(tmpdir(), "mutexd-js-checkout-"));
});
after(async () => {
  await d?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function replica() {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(root, "test", "checkout-child.mjs"), "u42", "30", "4"], {
      env: { ...process.env, MUTEXD_URL: d.url, CHECKOUT_STORE: dir }, stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    p.stdout.on("data", (b) => { out += b; });
    const timer = setTimeout(() => p.kill("SIGKILL"), 20000);
    p.on("exit", (code) => {
      clearTimeout(timer);
      code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`replica exited with ${code}`));
    });
  });
}

test("two replicas checking out one user at once: the balance is spent once", async () => {
  writeFileSync(join(dir, "u42.json"), JSON.stringify({ balance: 100, fence: 0 }));
  const placed = await Promise.all([replica(), replica()]);
  assert.equal(placed[0] + placed[1], 3, `orders placed: ${placed}`);
  assert.equal(JSON.parse(readFileSync(join(dir, "u42.json"), "utf8")).balance, 10);
  assert.equal(readFileSync(join(dir, "orders.log"), "utf8").trim().split("\n").length, 3);
});

test("the low-level example runs, and skips while another holds the key", async () => {
  const run = () => new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(root, "examples", "report.mjs")], { env: { ...process.env, MUTEXD_URL: d.url }, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    p.stdout.on("data", (b) => { out += b; });
    p.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`exited with ${code}`))));
  });
  assert.match(await run(), /^building the report with fence \d+\n$/);
  const { Client } = await import("mutexd");
  const c = new Client({ url: d.url });
  const lease = await c.acquire("report:daily");
  assert.equal(await run(), "another machine is building it\n");
  await lease.release();
  c.close();
});
