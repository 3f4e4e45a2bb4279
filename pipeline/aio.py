"""Running async code (the search stage's HTTP clients) inside a synchronous Dramatiq actor."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TypeVar

T = TypeVar("T")

#: how often the event loop wakes up, at most, so that an abort can land
TICK_S = 0.1


def run_interruptibly(coroutine: Coroutine[object, object, T]) -> T:
    """``asyncio.run(coroutine)``, with the loop woken every ``TICK_S``.

    Dramatiq's time limit and dramatiq-abort interrupt a worker thread by raising an exception in it,
    which only happens while the thread runs Python code. An event loop waiting on a slow server sits
    in ``epoll_wait`` and would only notice when the answer (or the timeout) arrives; the ticker
    bounds that to ``TICK_S``. The exception then unwinds ``asyncio.run``, which cancels what is left.
    """

    async def main() -> T:
        ticker = asyncio.create_task(_tick())
        try:
            return await coroutine
        finally:
            ticker.cancel()

    return asyncio.run(main())


async def _tick() -> None:
    while True:  # noqa: ASYNC110 - waking up is the point, there is nothing to wait for
        await asyncio.sleep(TICK_S)
