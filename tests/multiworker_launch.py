"""Start a two-worker ``MultiWorkerMirroredStrategy`` cluster on localhost and wait for it.

Usage: ``python3 tests/multiworker_launch.py FLAVOUR METHOD OUTPUT_PREFIX [TIMEOUT_SECONDS]``

Picks two free 127.0.0.1 ports, starts ``tests/multiworker_worker.py`` twice with a ``TF_CONFIG``
naming both (worker 0 and worker 1), waits at most TIMEOUT_SECONDS for both and kills whatever is
still running then, or as soon as one worker fails. Each worker writes ``OUTPUT_PREFIX{index}.npz``
and its log to ``OUTPUT_PREFIX{index}.log``. Exits 0 when both workers succeeded, else 1, and
prints one line per worker.

TensorFlow's gRPC server listens on every interface of the machine whatever host TF_CONFIG names;
tests/test_multiworker.py therefore runs this launcher inside a fresh network namespace that has
only the loopback interface, when the machine allows it (``unshare -n``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(flavour: str, method: str, prefix: str, timeout: float = 150.0) -> int:
    ports: list[int] = []
    while len(ports) < 2:
        port = free_port()
        if port not in ports:
            ports.append(port)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2")
        log = open(f"{prefix}{index}.log", "w")  # noqa: SIM115 (closed below)
        command = [sys.executable, os.path.join(HERE, "multiworker_worker.py")]
        command += [flavour, method, f"{prefix}{index}.npz"]
        workers.append(
            (subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [process.poll() for process, _ in workers]
            if all(code == 0 for code in codes) or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.2)
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
            process.wait()
            log.close()
    codes = [process.returncode for process, _ in workers]
    for index, code in enumerate(codes):
        print(f"worker {index}: exit code {code}")
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[0], args[1], args[2], *(float(a) for a in args[3:4])))
