"""pytest fixtures shared by the integration tests."""

import pytest

import segment_relay
import support


@pytest.fixture(autouse=True)
def segment_relays():
    """Stops the segmenting relays (ONEDOMAIN_SEGMENT) a test started, after its processes."""
    yield
    segment_relay.stop_all()


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
    for p in started:
        # Workers run their own event loop; an Asio I/O object on one would stall (see
        # Worker::CheckNoReactor).
        assert "Asio's reactor is in use" not in p.output(), f"{p.name}:\n{p.output()}"


def pytest_terminal_summary(terminalreporter):
    """The segmenting mode and seed, so a failing segmented run can be replayed (also with
    -q, which hides the report header)."""
    if segment_relay.enabled():
        terminalreporter.write_line(f"ONEDOMAIN_SEGMENT={segment_relay.mode()} "
                                    f"ONEDOMAIN_SEGMENT_SEED={segment_relay.seed()}")


def pytest_sessionfinish(session, exitstatus):
    """A segmented run in which no relay was ever started tested nothing in pieces: fail it
    (a fixture that stopped going through dp_support/fleet_support would do that)."""
    if segment_relay.enabled() and segment_relay.started_total == 0 and \
            session.testscollected > 0 and exitstatus == 0:
        print(f"\nONEDOMAIN_SEGMENT={segment_relay.mode()} but no test went through a relay")
        session.exitstatus = 1
