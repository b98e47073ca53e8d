"""asyncio: awaiting ports and workers without blocking the event loop or a thread per port."""
import asyncio
import threading

import pytest

import ringport
import workerfuncs


def test_receive_async_and_async_for():
    async def main():
        ch = ringport.MessageChannel()

        def producer():
            for i in range(50):
                ch.port2.post_message(i)
            ch.port2.close()

        assert await asyncio.wait_for(_receive_after_post(ch), 10) == "first"
        threads_before = threading.active_count()
        t = threading.Thread(target=producer)
        t.start()
        got = [m async for m in ch.port1]
        t.join()
        assert threading.active_count() <= threads_before   # no helper thread was started
        return got

    async def _receive_after_post(ch):
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, ch.port2.post_message, "first")
        return await ch.port1.receive_async()

    assert asyncio.run(main()) == list(range(50))


def test_receive_async_timeout_and_closed():
    async def main():
        ch = ringport.MessageChannel()
        with pytest.raises(ringport.Empty):
            await ch.port1.receive_async(timeout=0.05)
        with pytest.raises(TimeoutError):
            await ch.port1.receive_async(timeout=0.01)
        ch.port2.post_message("late")
        assert await ch.port1.receive_async(timeout=5) == "late"
        ch.port2.close()
        with pytest.raises(ringport.PortClosed):
            await ch.port1.receive_async()

    asyncio.run(main())


def test_event_loop_stays_responsive_while_waiting():
    async def main():
        ch = ringport.MessageChannel()
        waiter = asyncio.ensure_future(ch.port1.receive_async())
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0.005)
            ticks += 1
        assert not waiter.done()
        ch.port2.post_message("done")
        assert await asyncio.wait_for(waiter, 10) == "done"
        return ticks

    assert asyncio.run(main()) == 10


def test_many_ports_awaited_concurrently():
    async def main():
        chans = [ringport.MessageChannel() for _ in range(20)]
        tasks = [asyncio.ensure_future(c.port1.receive_async()) for c in chans]
        await asyncio.sleep(0.01)
        for i, c in enumerate(chans):
            c.port2.post_message(i)
        return await asyncio.wait_for(asyncio.gather(*tasks), 10)

    assert asyncio.run(main()) == list(range(20))


def test_worker_round_trip_and_exit_in_asyncio(backend):
    async def main():
        w = ringport.Worker(workerfuncs.echo, backend=backend)
        try:
            for i in range(20):
                w.post_message(i)
                assert await w.port.receive_async(timeout=30) == i
            w.port.close()
            assert await asyncio.wait_for(w.wait_exit(), 30) == 0
            assert await w == 0
        finally:
            w.terminate(30)

    asyncio.run(main())


def test_await_terminated_worker(backend):
    async def main():
        w = ringport.Worker(workerfuncs.block_in_receive, backend=backend)
        try:
            assert await w.port.receive_async(timeout=30) == "ready"
            exit_task = asyncio.ensure_future(w.wait_exit())
            await asyncio.sleep(0.01)
            assert not exit_task.done()
            threading.Thread(target=w.terminate).start()
            assert await asyncio.wait_for(exit_task, 30) == 1
        finally:
            w.terminate(30)

    asyncio.run(main())


def test_broadcast_receive_async():
    async def main():
        with ringport.BroadcastChannel("bc-aio") as a, ringport.BroadcastChannel("bc-aio") as b:
            asyncio.get_running_loop().call_later(0.01, a.post_message, "hi")
            return await b.receive_async(timeout=10)

    assert asyncio.run(main()) == "hi"


def test_receive_async_ends_with_port_closed_when_its_port_is_transferred():
    async def main():
        a, carrier = ringport.MessageChannel(), ringport.MessageChannel()
        waiting = asyncio.ensure_future(a.port2.receive_async())
        await asyncio.sleep(0)   # the receive is now waiting on the loop
        assert not waiting.done()
        carrier.port1.post_message(a.port2, transfer=[a.port2])
        with pytest.raises(ringport.PortClosed):
            await asyncio.wait_for(waiting, 10)

    asyncio.run(main())
