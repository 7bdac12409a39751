"""pytest fixtures shared by the integration tests."""

import pytest

import support


@pytest.fixture
def procs():
    """Collects started processes and stops every one of them (by PID) after the test."""
    started = []

    def start(args, **kwargs):
        p = support.Process(args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()
