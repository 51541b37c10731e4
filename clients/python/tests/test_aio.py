"""The asyncio variant against a real daemon."""

import asyncio
import time
import unittest
import uuid

import mutexd
from mutexd import aio
from tests.daemon import Daemon

daemon = None


def setUpModule():
    global daemon
    daemon = Daemon()


def tearDownModule():
    daemon.stop()


def key():
    return f"aio:{uuid.uuid4().hex[:12]}"


class AioTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.c = aio.AsyncClient(daemon.url)

    async def asyncTearDown(self):
        self.c.sync.close()

    async def waiters(self, k, want, timeout=5.0):
        end = time.monotonic() + timeout
        while (await self.c.inspect(k))["waiters"] != want:
            if time.monotonic() > end:
                self.fail(f"waiters never became {want}")
            await asyncio.sleep(0.01)

    async def test_tasks_take_turns_in_order(self):
        k, order, inside, peak = key(), [], [0], [0]
        holder = await self.c.acquire(k)

        async def task(i):
            async with self.c.lock(k, wait="10s") as lease:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                order.append((i, lease.fence))
                await asyncio.sleep(0.01)
                inside[0] -= 1
        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(task(i)))
            await self.waiters(k, i + 1)
        await holder.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        self.assertEqual([i for i, _ in order], [0, 1, 2])
        self.assertEqual(peak[0], 1)
        fences = [f for _, f in order]
        self.assertEqual(fences, sorted(fences))

    async def test_cancelled_task_leaves_the_queue(self):
        k = key()
        holder = await self.c.acquire(k)
        waiter = asyncio.create_task(self.c.acquire(k, wait="30s"))
        await self.waiters(k, 1)
        started = time.monotonic()
        waiter.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await waiter
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual((await self.c.inspect(k))["waiters"], 0)
        await holder.release()

    async def test_wait_for_timeout_leaves_the_queue(self):
        k = key()
        holder = await self.c.acquire(k)
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(self.c.acquire(k, wait="30s"), 0.3)
        self.assertEqual((await self.c.inspect(k))["waiters"], 0)
        await holder.release()

    async def test_failure_outcome_and_errors(self):
        k = key()
        got = []

        async def next_holder():
            got.append(await self.c.acquire(k, wait="5s"))
        with self.assertRaises(ZeroDivisionError):
            async with self.c.lock(k, on_error="continue") as lease:
                t = asyncio.create_task(next_holder())
                await self.waiters(k, 1)
                1 / 0
        await t
        previous = dict(got[0].previous)
        self.assertRegex(previous.pop("ended_at"), r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(previous, {"fence": lease.fence, "outcome": "failed"})
        with self.assertRaises(mutexd.LockTimeout):
            await self.c.acquire(k, wait=0)
        await got[0].release()
        with self.assertRaises(mutexd.NotHolder):
            await got[0].renew()

    async def test_lost_lease(self):
        k = key()
        with self.assertRaises(mutexd.LeaseLost):
            async with self.c.lock(k, ttl=1) as lease:
                await self.c.force_release(k)
                end = time.monotonic() + 3
                while not lease.lost.is_set() and time.monotonic() < end:
                    await asyncio.sleep(0.02)
                self.assertTrue(lease.lost.is_set())

    async def test_decorator_on_a_coroutine_function(self):
        seen = []

        @self.c.locked("order:{order_id}", ttl="5s")
        async def ship(order_id):
            seen.append((await self.c.inspect(f"order:{order_id}"))["held"])
            return order_id

        self.assertEqual(await asyncio.gather(ship("a1"), ship("a1"), ship("b2")), ["a1", "a1", "b2"])
        self.assertEqual(seen, [True, True, True])


if __name__ == "__main__":
    unittest.main()
