// @ts-check
import { mutex } from "mutexd";
import { createOrder, deductBalance, getBalance } from "./store.mjs";

/**
 * checkout charges a user once per order, even when every replica of the
 * service gets a request for the same user at the same moment: the lock on
 * `checkout:<user>` is held across processes by mutexd.
 *
 * @param {string} userId
 * @param {number} amount
 * @returns {Promise<boolean>} whether the order was placed
 */
export async function checkout(userId, amount) {
  return mutex(`checkout:${userId}`, async ({ lease, signal }) => {
    const balance = await getBalance(userId);
    if (balance < amount) return false;
    // The fence lets the store refuse a holder whose lease was lost meanwhile.
    await deductBalance(userId, amount, lease.fence);
    await createOrder(userId, amount, { signal });
    return true;
  }, { onError: "stop" });
}
