"""Azurite's blob service on loopback, for tests and benchmarks of the kept task outputs
(messaging/result_blobs.py). Azurite comes from npm into .tools/azurite (the lock file pins it);
the same package carries azurite-queue, which tests/events starts the same way."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AZURITE_DIR = ROOT / ".tools" / "azurite"
AZURITE_BLOB_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteUnavailable(RuntimeError):
    pass


def install() -> None:
    """`npm ci` of the pinned Azurite, once: a file lock keeps processes that start at the same
    moment (the test suite's workers) from installing over each other."""
    import fcntl

    if AZURITE_BLOB_BIN.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteUnavailable("npm is required to install Azurite; install Node.js 18+ with npm")
    with open(AZURITE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if AZURITE_BLOB_BIN.exists():  # another process installed it while this one waited
            return
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=AZURITE_DIR,
                                capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not AZURITE_BLOB_BIN.exists():
        raise AzuriteUnavailable(f"npm ci in {AZURITE_DIR} failed:\n{result.stdout}\n{result.stderr}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BlobService:
    process: subprocess.Popen
    port: int
    workdir: str

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{DEV_ACCOUNT};")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_blob_service(timeout: float = 30.0) -> BlobService:
    """azurite-blob on a free loopback port, in memory, no telemetry; ready when it listens."""
    install()
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-blob-")
    log_path = Path(workdir) / "azurite.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(AZURITE_BLOB_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
             "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    service = BlobService(proc, port, workdir)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            text = log_path.read_text()
            service.stop()
            raise AzuriteUnavailable(f"azurite-blob exited with {proc.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return service
        except OSError:
            if time.monotonic() > deadline:
                text = log_path.read_text()
                service.stop()
                raise AzuriteUnavailable(f"azurite-blob did not listen on {port} within {timeout:.0f} s:\n{text}")
            time.sleep(0.05)
