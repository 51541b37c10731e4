// Builds mutexd from this repository, then runs the test files with
// node --test against it (MUTEXD_TEST_BIN). CI calls this through npm test.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..", "..");
let bin = process.env.MUTEXD_TEST_BIN;
let dir;
if (!bin) {
  dir = mkdtempSync(join(tmpdir(), "mutexd-js-"));
  bin = join(dir, "mutexd");
  const t = Date.now();
  execFileSync("go", ["build", "-o", bin, "./cmd/mutexd"], { cwd: repo, stdio: "inherit" });
  console.log(`built mutexd in ${Date.now() - t} ms`);
}
const given = process.argv.slice(2);
const files = given.length ? given : readdirSync(here).filter((f) => f.endsWith(".test.mjs")).map((f) => join(here, f));
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=2", ...files], {
  stdio: "inherit",
  env: { ...process.env, MUTEXD_TEST_BIN: bin },
});
if (dir) rmSync(dir, { recursive: true, force: true });
process.exit(r.status ?? 1);
