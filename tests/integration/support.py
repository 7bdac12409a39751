"""Shared helpers for integration tests: start real binaries on 127.0.0.1 with ephemeral
ports, read the ports they report through --port-file, and stop exactly the processes started
here, by PID. Every wait has a deadline; nothing sleeps blindly."""

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

BUILD_DIR = os.environ.get(
    "ONEDOMAIN_BUILD_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SOURCE_DIR = os.environ.get(
    "ONEDOMAIN_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def binary(name):
    """Path of a built binary: dataplane, controlplane or demo_backend."""
    candidates = {
        "dataplane": os.path.join(BUILD_DIR, "dataplane", "dataplane"),
        "controlplane": os.path.join(BUILD_DIR, "controlplane", "controlplane"),
        "demo_backend": os.path.join(BUILD_DIR, "deploy", "demo", "demo_backend"),
    }
    path = candidates[name]
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is not built")
    return path


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process that reports its ports through --port-file."""

    def __init__(self, args, env=None, port_file=True, name=None):
        self.workdir = tempfile.mkdtemp(prefix="onedomain-test-")
        self.port_file = os.path.join(self.workdir, "ports.json") if port_file else None
        self.name = name or os.path.basename(args[0])
        full = list(args) + (["--port-file", self.port_file] if port_file else [])
        self.log_path = os.path.join(self.workdir, "output.log")
        self._log = open(self.log_path, "wb")
        merged = dict(os.environ)
        if env:
            merged.update(env)
        self.proc = subprocess.Popen(full, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=merged, stdin=subprocess.DEVNULL)
        self.ports = {}

    @property
    def pid(self):
        return self.proc.pid

    def wait_ports(self, timeout=15.0):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with open(self.port_file) as f:
                    return json.load(f)
            except (FileNotFoundError, json.JSONDecodeError):
                return None
        self.ports = wait_for(ready, timeout, what=f"{self.name} port file")
        return self.ports

    def output(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, signo):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signo)

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} did not exit within {timeout}s:\n{self.output()}")

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after timeout; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def http_get(url, headers=None, timeout=5.0):
    """Returns (status, headers, body bytes) without raising on HTTP error statuses."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def write_file(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path
