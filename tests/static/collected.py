"""collectstatic for test sessions: the suite runs with DEBUG off, so pages name hashed
files and the web servers it starts serve STATIC_ROOT, which must hold them.

Each session gets a STATIC_ROOT of collectstatic's output for the current static sources,
built once per change of them (about 8 s) and shared by every later session, concurrent
ones included: a directory named after a fingerprint of the sources, renamed into place
whole. Not the repository's .data/staticfiles, which `make run` rewrites under a server
that may be running."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.apps import apps
from django.contrib.staticfiles import finders

REPO = Path(__file__).resolve().parents[2]
# Builds for sources that no longer exist are removed after this long unused; a session
# that started before them and still runs is long finished by then.
STALE_AFTER_S = 24 * 3600


def static_sources_fingerprint() -> str:
    """What collectstatic's output depends on: every file the finders list (name, size,
    modification time), the storage's code and the libraries that hash and compress."""
    digest = hashlib.sha256()
    ignore = apps.get_app_config("staticfiles").ignore_patterns
    for finder in finders.get_finders():
        for name, storage in sorted(finder.list(ignore), key=lambda item: item[0]):
            stat = os.stat(storage.path(name))
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update((REPO / "config" / "static_files.py").read_bytes())
    for package in ("django", "servestatic", "brotli"):
        digest.update(f"{package}={importlib.metadata.version(package)}\n".encode())
    return digest.hexdigest()[:16]


def collected_static_root(base: Path) -> Path:
    """A directory under `base` holding collectstatic's output for the current sources,
    collected now unless an earlier session did."""
    root = base / static_sources_fingerprint()
    if (root / "staticfiles.json").exists():
        os.utime(root)
        return root
    base.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=base))
    try:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=REPO,
            env={**os.environ, "STATIC_ROOT": str(building)},
            check=True,
            timeout=300,
        )
        try:
            building.rename(root)
        except OSError:
            # A concurrent session renamed its own build first: same sources, same files.
            if not (root / "staticfiles.json").exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    stale_builds_remove(base, keep=root)
    return root


def stale_builds_remove(base: Path, *, keep: Path) -> None:
    for other in base.iterdir():
        if other != keep and time.time() - other.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(other, ignore_errors=True)
