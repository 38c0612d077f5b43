"""Disk faults for real processes: a filesystem that really fills up, and a shim that fails
write or fsync on the ledger's files on command.

- `SmallDisk`: an ext4 filesystem in a 32 MiB file, loop-mounted (root, `mkfs.ext4`,
  `mount`). `fill()` writes a filler file until the kernel says ENOSPC, so the ledger's
  next write that needs a new block gets a real ENOSPC (or a short write first) from ext4;
  `free()` deletes the filler.
- `FaultShim`: `fault_shim.c` built with gcc at test time and loaded with LD_PRELOAD into
  the server. It fails `write` or `fsync`/`fdatasync` with EIO or ENOSPC on the files under
  the ledger directory while its control file exists (the C file says how). ENOSPC or EIO
  from fsync cannot be had from a loop device here (no device-mapper in this kernel), so
  the shim stands in for the device; everything above libc is the real server.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support import require

SHIM_SOURCE = Path(__file__).with_name("fault_shim.c")
SMALL_DISK_BYTES = 32 * 1024 * 1024
FILL_CHUNK_BYTES = 1024 * 1024


def build_shim(directory: Path) -> Path:
    """Compile the shim into `directory`; skips (fails when strict) without gcc."""
    gcc = shutil.which("gcc")
    require(gcc is not None, "the fault shim needs gcc to build it")
    assert gcc is not None
    library = directory / "fault_shim.so"
    flags = ["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"]
    built = subprocess.run(
        [gcc, *flags, "-o", str(library), str(SHIM_SOURCE), "-ldl", "-lpthread"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    return library


class FaultShim:
    """The shim's switch for one server: `inject("fsync EIO lose")`, then `remove()`."""

    def __init__(self, library: Path, watched: Path, control: Path) -> None:
        self.library = library
        self.watched = watched
        self.control = control
        self.hits_path = control.with_name(control.name + ".hits")

    def environment(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(self.library),
            "FAULT_SHIM_PATH": str(self.watched.resolve()),
            "FAULT_SHIM_CONTROL": str(self.control),
        }

    def inject(self, line: str) -> None:
        # Written aside and renamed, so the shim never reads half a line.
        staged = self.control.with_name(self.control.name + ".staged")
        staged.write_text(line + "\n")
        staged.replace(self.control)

    def remove(self) -> None:
        self.control.unlink(missing_ok=True)

    def hits(self) -> list[str]:
        if not self.hits_path.exists():
            return []
        return self.hits_path.read_text().splitlines()


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


class SmallDisk:
    """A loop-mounted ext4 filesystem of `SMALL_DISK_BYTES`, mounted at `mount_point`."""

    def __init__(self, directory: Path) -> None:
        self.image = directory / "disk.img"
        self.mount_point = directory / "disk"
        self.filler = self.mount_point / "filler"
        self.mounted = False

    def mount(self) -> None:
        require(os.geteuid() == 0, "a loop-mounted filesystem needs root")
        for tool in ("mkfs.ext4", "mount", "umount"):
            require(shutil.which(tool) is not None, f"a loop-mounted filesystem needs {tool}")
        self.mount_point.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as image:
            image.truncate(SMALL_DISK_BYTES)
        # -m 0: no blocks kept for root (the server runs as root here and would use them);
        # 4 KiB blocks, as on any real disk, so ledger frames fill a block before the next.
        made = _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096", str(self.image)])
        require(made.returncode == 0, f"mkfs.ext4 failed: {made.stderr.strip()}")
        mounted = _run(["mount", "-o", "loop", str(self.image), str(self.mount_point)])
        require(mounted.returncode == 0, f"cannot loop-mount a filesystem: {mounted.stderr}")
        self.mounted = True

    def fill(self) -> int:
        """Write the filler until ENOSPC; the bytes it took."""
        written = 0
        descriptor = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for chunk_bytes in (FILL_CHUNK_BYTES, 4096, 512):
                chunk = b"\0" * chunk_bytes
                while True:
                    try:
                        written += os.write(descriptor, chunk)
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        break
            with contextlib.suppress(OSError):
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return written

    def free_bytes(self) -> int:
        status = os.statvfs(self.mount_point)
        return status.f_bavail * status.f_frsize

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        os.sync()

    def unmount(self) -> None:
        if not self.mounted:
            return
        if _run(["umount", str(self.mount_point)]).returncode != 0:
            # Something still holds a file (a test that failed early): detach lazily, so
            # the loop device goes once it is let go.
            _run(["umount", "-l", str(self.mount_point)])
        self.mounted = False
        self.image.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(directory: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(directory)
    try:
        disk.mount()
        yield disk
    finally:
        disk.unmount()
