// @ts-check
// A stand-in for the example's database: one JSON file per user in the
// directory CHECKOUT_STORE, slow enough that unlocked checkouts would race.
import { appendFile, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const dir = process.env.CHECKOUT_STORE ?? ".";

/** @param {string} userId */
async function load(userId) {
  await sleep(5);
  return JSON.parse(await readFile(join(dir, `${userId}.json`), "utf8"));
}

/** @param {string} userId @returns {Promise<number>} */
export async function getBalance(userId) {
  return (await load(userId)).balance;
}

/**
 * deductBalance refuses a write whose fence is lower than the last one
 * seen: the store's own defence against a holder that lost its lease.
 * @param {string} userId @param {number} amount @param {number} fence
 */
export async function deductBalance(userId, amount, fence) {
  const user = await load(userId);
  if (fence < user.fence) throw new Error(`stale fence ${fence} < ${user.fence}`);
  await writeFile(join(dir, `${userId}.json`), JSON.stringify({ balance: user.balance - amount, fence }));
}

/** @param {string} userId @param {number} amount @param {{ signal?: AbortSignal }} [opts] */
export async function createOrder(userId, amount, opts = {}) {
  opts.signal?.throwIfAborted();
  await appendFile(join(dir, "orders.log"), `${userId} ${amount}\n`);
}
