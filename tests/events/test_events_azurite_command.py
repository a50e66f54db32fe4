"""The README's Azurite command works as written with the storage SDKs this app installs, and keeps
Azurite's files in `.azurite/` (ignored by git and by the deployment package), not the repo root."""
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from events_support import AZURITE_DIR, DEV_ACCOUNT, DEV_KEY, _free_port, _install_azurite

ROOT = Path(__file__).resolve().parents[2]


def _documented_command() -> list:
    line = next(l for l in (ROOT / "README.md").read_text("utf-8").splitlines() if l.startswith("npx azurite"))
    return shlex.split(line.split("&", 1)[0])


def test_the_documented_azurite_command_serves_the_queue_client_and_writes_only_under_dot_azurite():
    _install_azurite()
    args = _documented_command()
    assert args[:2] == ["npx", "azurite"]
    workdir = Path(tempfile.mkdtemp(prefix="readme-azurite-"))
    ports = {"--blobPort": _free_port(), "--queuePort": _free_port(), "--tablePort": _free_port()}
    # The documented flags as written; only the ports move off the defaults so tests never collide.
    command = [str(AZURITE_DIR / "node_modules" / ".bin" / "azurite"), *args[2:], "--disableTelemetry",
               *[str(x) for pair in ports.items() for x in pair]]
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "azurite exited"
            try:
                with socket.create_connection(("127.0.0.1", ports["--queuePort"]), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "azurite did not listen"
                time.sleep(0.05)
        from azure.storage.queue import QueueClient

        conn = (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"QueueEndpoint=http://127.0.0.1:{ports['--queuePort']}/{DEV_ACCOUNT};")
        queue = QueueClient.from_connection_string(conn, "readme-check")
        queue.create_queue()  # refused with "API version ... not supported" without --skipApiVersionCheck
        queue.send_message("hello")
        assert [m.content for m in queue.receive_messages()] == ["hello"]
    finally:
        proc.terminate()
        proc.wait(10)
    try:
        assert sorted(p.name for p in workdir.iterdir()) == [".azurite"]
        ignored = {l.strip().rstrip("/") for l in (ROOT / ".gitignore").read_text().splitlines()}
        assert ".azurite" in ignored
        assert ".azurite" in {l.strip().rstrip("/") for l in (ROOT / ".funcignore").read_text().splitlines()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
