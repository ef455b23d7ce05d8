"""Start a command the way a container or a hardened unit would, without a container engine.

A private mount namespace (``unshare --mount``) gets what a manifest imposes:
the root file system read-only, the folders the image creates (under /run),
empty writable folders mounted where the manifest mounts them (emptyDir,
tmpfs, RuntimeDirectory, PrivateTmp), a user id and group id, and exactly the
environment the manifest gives. The process keeps one capability, reading any
file, because the Python interpreter running the tests may live in a folder
that user cannot read; writing is governed by the usual permissions.

Nothing outside the namespace changes: the mounts vanish with its processes.
Needs root (CI runs as root) and util-linux's ``unshare``, ``setpriv`` and
``nsenter``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailqueue.testing.running import Running

__all__ = ["Confined", "Confinement", "available"]

# Only folders under these may be created or mounted: the host's own tree is never touched.
_MOUNTABLE = ("/run/", "/tmp")

# What the confined process must still see when a volume hides the folder it lives in
# (a checkout or a virtualenv under /tmp, as a CI clone may be): bound back in place.
_HOST_FOLDERS = tuple(
    dict.fromkeys(
        str(Path(p).resolve())
        for p in (Path(__file__).resolve().parents[1], sys.prefix, sys.base_prefix)
    )
)


def available() -> str | None:
    """None when confinement works here, else why not."""
    if os.geteuid() != 0:
        return "needs root (for a mount namespace and another user id)"
    missing = [tool for tool in ("unshare", "setpriv", "nsenter") if not shutil.which(tool)]
    if missing:
        return f"needs util-linux's {', '.join(missing)}"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare --mount refused: {probe.stderr.decode(errors='replace').strip()}"
    return None


@dataclass
class Confinement:
    """What a manifest imposes on its process."""

    uid: int
    gid: int
    read_only_root: bool
    # Folders the image creates, owned by the user (they stay read-only under a read-only root).
    image_dirs: Sequence[str] = ()
    # Empty writable folders mounted over these paths.
    volumes: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"

    def setup_script(self) -> str:
        """Shell commands run as root inside the namespace, before dropping to the user."""
        for path in [*self.image_dirs, *self.volumes]:
            if not path.startswith(_MOUNTABLE):
                raise ValueError(f"cannot emulate a folder outside /run and /tmp: {path}")
        owner = f"{self.uid}:{self.gid}"
        lines = ["set -e", "mount -t tmpfs -o mode=0755 tmpfs /run"]
        hidden = [
            folder
            for folder in _HOST_FOLDERS
            if any(_under(folder, volume) for volume in self.volumes)
        ]
        for index, folder in enumerate(hidden):
            lines.append(f"mkdir -p /run/.host/{index}")
            lines.append(f"mount --bind {shlex.quote(folder)} /run/.host/{index}")
        lines += [f"mkdir -p {shlex.quote(p)}" for p in self.volumes if p.startswith("/run/")]
        lines += [
            f"mkdir -p {shlex.quote(p)}; chown {owner} {shlex.quote(p)}" for p in self.image_dirs
        ]
        if self.read_only_root:
            lines += ["mount -o remount,bind,ro /", "mount -o remount,ro /run"]
        # emptyDir and tmpfs mounts: empty, writable by the pod's user.
        lines += [
            f"mount -t tmpfs -o mode=0770,uid={self.uid},gid={self.gid} tmpfs {shlex.quote(p)}"
            for p in self.volumes
        ]
        for index, folder in enumerate(hidden):
            lines.append(f"mkdir -p {shlex.quote(folder)}")
            lines.append(f"mount --bind /run/.host/{index} {shlex.quote(folder)}")
        lines.append(f"cd {shlex.quote(self.workdir)}")
        return "\n".join(lines)

    def as_user(self) -> list[str]:
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            "--",
        ]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class Confined(Running):
    """``with Confined(argv, confinement) as process:`` runs ``argv`` confined; stopped on exit."""

    def __init__(self, argv: Sequence[str], confinement: Confinement, log: Path) -> None:
        self.argv = list(argv)
        self.confinement = confinement
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Confined:
        script = self.confinement.setup_script() + '\nexec "$@"'
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "confined",
                    *self.confinement.as_user(),
                    *self.argv,
                ],
                env=dict(self.confinement.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def run_inside(
        self, argv: Sequence[str], timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the process's mount namespace as its user (a probe, an exec)."""
        assert self.process is not None
        return subprocess.run(
            [
                "nsenter",
                f"--target={self.process.pid}",
                "--mount",
                "--wd=/",
                *self.confinement.as_user(),
                *argv,
            ],
            env=dict(self.confinement.env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def exited(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, as a container engine stops a container; SIGKILL after ``timeout``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # nothing of it may outlive the test
        return self.process.returncode
