"""Waiting on a condition with a deadline: the one way tests synchronise (no sleep stands for an event)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(condition: Callable[[], T], timeout: float, interval: float = 0.02) -> T | bool:
    """``condition()``'s first truthy value, or False at the deadline (for checks that report, not fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)  # poll interval, bounded by the deadline


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail the test at the deadline."""
    value = poll_until(condition, timeout, interval)
    if not value:
        raise AssertionError(f"condition not met within {timeout}s: {condition}")
    return value  # type: ignore[return-value]


async def until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.005) -> None:
    """``wait_for`` on the event loop: the loop keeps running while the condition is polled."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        await asyncio.sleep(interval)  # poll interval, bounded by the deadline above
