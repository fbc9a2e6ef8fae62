"""The client's fixed concurrency slots (aqido._slots.Slots): first come, first served."""

from __future__ import annotations

import asyncio

import pytest

from aqido._slots import Slots

pytestmark = pytest.mark.anyio


async def test_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)


async def test_free_slots_are_taken_at_once_and_given_back() -> None:
    slots = Slots(2)
    assert slots.acquire_nowait()
    await slots.acquire()
    assert slots.available == 0
    assert not slots.acquire_nowait()
    slots.release()
    slots.release()
    assert slots.available == 2
    with pytest.raises(RuntimeError, match="more times than acquire"):
        slots.release()


async def test_waiters_are_served_in_order_and_newcomers_never_jump_the_line() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[int] = []

    async def take(n: int) -> None:
        await slots.acquire()
        order.append(n)

    tasks = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert slots.waiting == 3
    slots.release()  # goes to waiter 0, not to the pool
    assert slots.available == 0
    assert not slots.acquire_nowait()  # others are waiting: no jumping
    await asyncio.sleep(0)
    assert order == [0]
    slots.release()
    slots.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    slots.release()
    assert slots.available == 1


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.waiting == 0
    slots.release()
    assert slots.available == 1


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_runs_goes_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to `first`...
    first.cancel()  # ...which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # the slot went on to `second`
    assert slots.available == 0
    assert slots.waiting == 0
    slots.release()
    assert slots.available == 1


async def test_resizing_wakes_waiters_or_waits_for_slots_to_come_back() -> None:
    slots = Slots(2)
    await slots.acquire()
    await slots.acquire()
    woken: list[int] = []

    async def take(n: int) -> None:
        await slots.acquire()
        woken.append(n)

    tasks = [asyncio.create_task(take(n)) for n in range(3)]
    await asyncio.sleep(0)
    slots.resize(3)  # one more: the first waiter gets it at once
    await asyncio.sleep(0)
    assert woken == [0]
    slots.resize(1)  # three taken, one allowed: two must come back before anyone else
    slots.release()
    slots.release()
    await asyncio.sleep(0)
    assert woken == [0]
    assert slots.available == 0
    slots.release()  # now one taken of one: the next waiter gets the freed slot
    await asyncio.sleep(0)
    assert woken == [0, 1]
    slots.resize(2)
    await asyncio.sleep(0)
    assert woken == [0, 1, 2]
    await asyncio.gather(*tasks)
    with pytest.raises(ValueError, match="at least 1"):
        slots.resize(0)
