#!/usr/bin/env python3
"""Checks the data plane's layering: each folder of dataplane/ is a CMake library that
declares the folders it depends on (onedomain_dataplane_library(... DEPS ...) in
dataplane/CMakeLists.txt or the folder's own CMakeLists.txt), and a file may include headers of its own folder and of those
folders only. Also checks that nothing on a worker thread reaches Asio's reactor or its
detail/ headers: workers run on their Dispatcher (runtime/dispatcher.h) and nothing else. The
dispatcher's own loop alone may name Asio's thread context (detail/), so that Asio recycles
coroutine frames in callbacks it runs outside io_context::poll_one.

Usage: check-layering.py [SOURCE_DIR]   (exit 1 with one line per violation)
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent)
DP = ROOT / "dataplane"
CALL = re.compile(r"onedomain_dataplane_library\(\s*(\w+)(.*?)\)", re.S)
INCLUDE = re.compile(r'^\s*#\s*include\s+"dataplane/(\w+)/([^"]+)"', re.M)
# Folders whose code runs on worker threads: no Asio I/O objects there (they would start
# Asio's reactor on the worker, which nothing turns), except the dispatcher itself.
WORKER_FOLDERS = {"runtime", "net", "upstream", "ws_tunnel", "worker", "http_proxy", "http2",
                  "listener"}
REACTOR_USE = re.compile(r"\b(io_context|steady_timer|system_timer|basic_waitable_timer|"
                         r"signal_set|tcp::socket|tcp::acceptor|tcp::resolver|"
                         r"basic_stream_socket|stream_descriptor)\b")
# Control-thread code inside worker folders (DNS refresh runs on the server's control loop).
REACTOR_ALLOWED = {"runtime/dispatcher.h", "runtime/dispatcher.cc",
                   "upstream/dns_refresher.h", "upstream/dns_refresher.cc"}
# The one file that may include Asio's detail/ headers (Dispatcher::Run's thread context).
DETAIL_ALLOWED = {"runtime/dispatcher.cc"}


def declared_deps():
    text = "\n".join(f.read_text() for f in [DP / "CMakeLists.txt", *sorted(DP.glob("*/CMakeLists.txt"))])
    deps = {}
    for name, body in CALL.findall(text):
        words = body.split()
        found = []
        if "DEPS" in words:
            for w in words[words.index("DEPS") + 1:]:
                if w.isupper():
                    break
                found.append(w)
        deps[name] = set(found)
    return deps


def main():
    deps = declared_deps()
    problems = []
    folders = sorted(p.name for p in DP.iterdir() if p.is_dir())
    for folder in folders:
        if folder not in deps:
            problems.append(f"dataplane/{folder}/: no onedomain_dataplane_library({folder} ...) "
                            "in dataplane/CMakeLists.txt")
    for folder, ds in deps.items():
        for d in ds:
            if d not in deps:
                problems.append(f"dataplane/CMakeLists.txt: {folder} depends on unknown {d}")
    # No cycles among the declared dependencies.
    state = {}

    def visit(n, path):
        if state.get(n) == "done":
            return
        if state.get(n) == "open":
            problems.append("dependency cycle: " + " -> ".join(path + [n]))
            return
        state[n] = "open"
        for d in sorted(deps.get(n, ())):
            visit(d, path + [n])
        state[n] = "done"

    for n in sorted(deps):
        visit(n, [])
    for f in sorted(DP.rglob("*")):
        if f.suffix not in (".h", ".cc") or f.parent == DP:
            continue
        rel = f.relative_to(DP)
        folder = rel.parts[0]
        text = f.read_text()
        for m in INCLUDE.finditer(text):
            target = m.group(1)
            if target != folder and target not in deps.get(folder, set()):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"dataplane/{rel}:{line}: includes dataplane/{target}/{m.group(2)}"
                                f" but {folder} does not depend on {target}")
        if "boost/asio/detail/" in text and str(rel) not in DETAIL_ALLOWED:
            problems.append(f"dataplane/{rel}: includes an Asio detail/ header")
        if folder in WORKER_FOLDERS and str(rel) not in REACTOR_ALLOWED:
            for i, line in enumerate(text.splitlines(), 1):
                code = line.split("//", 1)[0]
                m = REACTOR_USE.search(code)
                if m:
                    problems.append(f"dataplane/{rel}:{i}: uses {m.group(1)} on a worker thread "
                                    "(Asio's reactor; use the Dispatcher)")
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layering problem(s)", file=sys.stderr)
        return 1
    print(f"layering ok: {len(deps)} libraries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
