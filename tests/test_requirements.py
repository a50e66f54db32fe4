"""The lock (requirements.txt, what Azure's remote build installs) and the requirements
(requirements.in) agree, and every locked file is hashed; checked offline, from the files alone."""
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.txt"
REQUIREMENTS = ROOT / "requirements.in"
# Floors above known CVEs (issue 17): a refresh of the lock must never go below them.
CVE_FLOORS = {"requests": "2.32.4", "azure-identity": "1.16.1", "urllib3": "2.6.3", "cryptography": "44.0.1",
              "certifi": "2024.7.4", "idna": "3.7", "pyjwt": "2.10.1", "aiohttp": "3.12.14", "werkzeug": "3.1.4"}


def requirements(path: Path) -> list:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def lock_entries(path: Path = LOCK) -> dict:
    """name -> (pinned version, [hashes]) from a pip-compile --generate-hashes lock."""
    entries, current = {}, None
    for line in path.read_text("utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line.startswith(" "):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(?:\s*;[^\\]*)?\s*\\?", stripped)
            assert match, f"not an exact pin: {stripped!r}"
            current = canonicalize_name(match.group(1))
            assert current not in entries, f"{current} is locked twice"
            entries[current] = (Version(match.group(2)), [])
        else:
            hashed = re.fullmatch(r"--hash=sha256:([0-9a-f]{64})\s*\\?", stripped)
            assert hashed and current, f"unexpected line in the lock: {stripped!r}"
            entries[current][1].append(hashed.group(1))
    return entries


def test_every_requirement_is_locked_within_its_range():
    locked = lock_entries()
    for requirement in requirements(REQUIREMENTS):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is required but not in the lock: run `make lock`"
        version, _ = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name} is locked at {version}, outside {requirement.specifier}: run `make lock`")


def test_every_locked_package_is_pinned_and_hashed():
    locked = lock_entries()
    assert len(locked) >= len(requirements(REQUIREMENTS))
    for name, (_, hashes) in locked.items():
        assert hashes, f"{name} has no hash: pip would refuse the whole lock"
    text = LOCK.read_text("utf-8")
    assert "make lock" in text[:400]  # its header says how it is made


def test_the_requirements_keep_floors_above_known_cves():
    required = {canonicalize_name(r.name): r for r in requirements(REQUIREMENTS)}
    locked = lock_entries()
    for name, floor in CVE_FLOORS.items():
        assert name in required, f"{name} has no floor in requirements.in"
        assert not required[name].specifier.contains(Version(_below(floor)), prereleases=True), (
            f"{required[name]} admits versions below {floor}")
        assert locked[name][0] >= Version(floor)


def _below(version: str) -> str:
    """A version just below `version` (its last release part lowered; the floor itself is allowed)."""
    parts = [int(p) for p in Version(version).release]
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] > 0:
            parts[index] -= 1
            break
    return ".".join(map(str, parts)) + ".999"


def test_make_installs_the_lock_with_hashes_in_a_pip_run_of_its_own():
    """pip checks hashes for every requirement of a run once any line has one: the unhashed
    development tools cannot share the lock's run, nor include the lock."""
    makefile = (ROOT / "Makefile").read_text("utf-8")
    installs = re.findall(r"pip install -q (.*)", makefile)
    assert installs[1:] == ["--require-hashes -r requirements.txt", "-r requirements-dev.txt"]
    dev = (ROOT / "requirements-dev.txt").read_text("utf-8")
    assert "-r requirements.txt" not in dev and "-c requirements.txt" not in dev


@pytest.mark.parametrize("line, ok", [
    ("requests==2.32.4 \\", True), ("requests>=2.32.4", False), ("requests", False),
])
def test_the_lock_reader_refuses_what_is_not_an_exact_pin(tmp_path, line, ok):
    lock = tmp_path / "requirements.txt"
    lock.write_text(f"{line}\n    --hash=sha256:{'a' * 64}\n")
    if ok:
        assert lock_entries(lock) == {"requests": (Version("2.32.4"), ["a" * 64])}
    else:
        with pytest.raises(AssertionError):
            lock_entries(lock)
