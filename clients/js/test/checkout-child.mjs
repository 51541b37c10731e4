// Runs n checkouts of amount for user at once through the README's example
// and prints how many placed an order.
import { checkout } from "../examples/checkout.mjs";

const [user, amount, n] = process.argv.slice(2);
const placed = await Promise.all(Array.from({ length: Number(n) }, () => checkout(user, Number(amount))));
console.log(JSON.stringify(placed.filter(Boolean).length));
