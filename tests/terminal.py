"""Running a command on a pseudo-terminal, for the CLI tests that need a real terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping, Sequence


def run_on_pty(
    command: Sequence[str], *, env: Mapping[str, str], timeout: float = 60
) -> tuple[int, str]:
    """Run ``command`` with stdin, stdout and stderr on a pseudo-terminal; return
    ``(exit status, everything it wrote)``.  Killed after ``timeout`` seconds."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        list(command), stdin=slave, stdout=slave, stderr=slave, env=dict(env)
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        status = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")
