"""Fixtures every test folder can use."""
from typing import List

import pytest


class SleepRecorder:
    """Stands in for time.sleep in the client's retry policy: records each wait and moves a fake
    clock by it, so retry tests take no wall time and can assert the waits."""

    def __init__(self) -> None:
        self.sleeps: List[float] = []
        self.now = 1000.0

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()
