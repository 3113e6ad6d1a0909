"""Opening a job's files so that they stay beneath an allowed root, however the
tree changes between the job's check and the open (a symlink swapped in
meanwhile cannot lead out).

Linux 5.6+ resolves the whole path inside the kernel with openat2 and
RESOLVE_BENEATH: symlinks are followed while they stay beneath the root.
Where openat2 is missing (older kernels, some seccomp filters), each
component is opened with O_NOFOLLOW instead, so no symlink below the root is
followed at all. Both open relative to a descriptor of the root, and every
later step (temporary files, renames) goes through descriptors too."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat

from .errors import PermanentError

_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
# openat2's number is shared by every architecture on the generic syscall table.
_SYS_OPENAT2 = 437 if platform.machine() in ("x86_64", "aarch64", "arm64", "riscv64") else None


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
use_openat2 = _SYS_OPENAT2 is not None  # tests turn it off to prove the fallback


def _escape(path: str) -> PermanentError:
    return PermanentError("path-not-allowed", f"{path!r} leads outside the allowed roots")


def _openat2(dir_fd: int, rel: str, flags: int, mode: int) -> int | None:
    """The descriptor, or None when this kernel has no openat2."""
    global use_openat2
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    for _ in range(8):  # EAGAIN: a concurrent rename made the kernel unsure; retry
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2 or -1),
            ctypes.c_int(dir_fd),
            rel.encode(),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.EAGAIN:
            continue
        if err in (errno.ENOSYS, errno.EPERM) and use_openat2:
            use_openat2 = False
            return None
        if err == errno.EXDEV:
            raise _escape(rel)
        raise OSError(err, os.strerror(err), rel)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), rel)


def _open_nofollow(dir_fd: int, parts: list[str], flags: int, mode: int) -> int:
    fd = os.dup(dir_fd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            try:
                nxt = os.open(
                    name,
                    (flags if last else os.O_RDONLY | os.O_DIRECTORY) | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode,
                    dir_fd=fd,
                )
            except OSError as e:
                # O_NOFOLLOW refuses a symlink with ELOOP, or ENOTDIR where a directory was asked for.
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(name, fd):
                    raise PermanentError(
                        "path-not-allowed",
                        f"{'/'.join(parts)!r} goes through a symlink (not followed below an "
                        "allowed root on this kernel, which lacks openat2)",
                    ) from None
                raise
            if last:
                return nxt
            os.close(fd)
            fd = nxt
        raise AssertionError("unreachable: parts is never empty")
    finally:
        os.close(fd)


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _escape(rel)
    return parts or ["."]


def open_beneath(root: str, rel: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` of ``root/rel`` that cannot resolve outside ``root``.
    Raises PermanentError("path-not-allowed") on an escape, OSError otherwise."""
    parts = _parts(rel)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if use_openat2:
            fd = _openat2(root_fd, "/".join(parts), flags, mode)
            if fd is not None:
                return fd
        return _open_nofollow(root_fd, parts, flags, mode)
    finally:
        os.close(root_fd)


def open_dir(path: str, root: str | None, rel: str, create: bool) -> int:
    """A descriptor of the directory ``path`` (``root/rel`` when confined),
    made with its missing parents when ``create``."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if root is None:
        if create:
            os.makedirs(path, exist_ok=True)
        return os.open(path, flags)
    try:
        return open_beneath(root, rel, flags)
    except FileNotFoundError:
        if not create:
            raise
    parts = _parts(rel)
    fd = os.open(root, flags)
    try:
        for i, name in enumerate(parts):
            try:
                os.mkdir(name, 0o755, dir_fd=fd)  # mkdir never follows a symlink at its name
            except FileExistsError:
                pass
            nxt = open_beneath(root, "/".join(parts[: i + 1]), flags)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise
