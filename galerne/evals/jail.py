"""The sandbox's launcher: confine this process, then run the untrusted program in it.

Run as ``python -I jail.py CONFIG_JSON`` by `galerne.evals.sandbox`; it imports only the standard library,
so nothing of Galerne is loaded next to model-written code. In order, each layer applied when the kernel
and our privileges allow it, and every layer's outcome reported on the first line of stderr
(``GALERNE-SANDBOX {json}``) so the caller knows what held:

1. namespaces: a new network namespace (no interface but a loopback that is down: no network at all) and a
   new PID namespace whose init dies with this launcher, so a timeout kills every descendant. As root this
   needs CAP_SYS_ADMIN; otherwise an unprivileged user namespace is tried first.
2. Landlock (Linux ≥ 5.13, unprivileged): writes, deletions and new files only beneath the work directory;
   on ABI ≥ 4 every TCP bind and connect refused (a second network layer that needs no privilege); on ABI ≥ 6
   no signals to processes outside the sandbox and no abstract UNIX sockets.
3. rlimits: address space (memory), CPU seconds, file size, open files, no core dumps, and processes —
   after dropping to `nobody` when started as root, since root ignores RLIMIT_NPROC.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
NOBODY = 65534

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every architecture.
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_WRITE_FILE = 1 << 1
FS_WRITE_ACCESS = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make *
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _error() -> str:
    return os.strerror(ctypes.get_errno())


def _unshare_namespaces(report: dict[str, Any]) -> bool:
    """New network and PID namespaces; True when running in a user namespace (uid mapped, not real root)."""
    flags = CLONE_NEWNET | CLONE_NEWPID
    if _libc.unshare(flags) == 0:
        report["network_namespace"] = report["pid_namespace"] = True
        return False
    first_error = _error()
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | flags) == 0:
        with open("/proc/self/setgroups", "w") as handle:
            handle.write("deny")
        with open("/proc/self/uid_map", "w") as handle:
            handle.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as handle:
            handle.write(f"{gid} {gid} 1")
        report["network_namespace"] = report["pid_namespace"] = True
        report["user_namespace"] = True
        return True
    report["network_namespace"] = report["pid_namespace"] = False
    report["namespace_error"] = f"{first_error}; user namespace: {_error()}"
    return False


def _landlock(workdir: str, report: dict[str, Any]) -> None:
    abi = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    report["landlock_abi"] = max(abi, 0)
    if abi < 1:
        report["landlock_error"] = _error()
        return
    fs_access = FS_WRITE_ACCESS | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(
        handled_access_fs=fs_access,
        handled_access_net=(NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
        scoped=(SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        report["landlock_error"] = _error()
        return
    try:
        file_access = FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)
        for path, access in ((workdir, fs_access), ("/dev/null", file_access)):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
                if _libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0):
                    report["landlock_error"] = f"add rule {path}: {_error()}"
                    return
            finally:
                os.close(fd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0):
            report["landlock_error"] = _error()
            return
    finally:
        os.close(ruleset)
    report["writes_confined"] = True
    report["tcp_denied"] = abi >= 4
    report["signals_scoped"] = abi >= 6


def _limit(config: dict[str, Any], report: dict[str, Any], in_user_namespace: bool) -> None:
    memory = int(config["memory_bytes"])
    cpu = int(config["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(config["max_file_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    processes = int(config["max_processes"])
    if os.getuid() == 0 and not in_user_namespace and _nobody_can_run_python():
        os.chown(config["workdir"], NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        report["user"] = "nobody"
    elif os.getuid() == 0 and not in_user_namespace:
        # The interpreter lives where `nobody` cannot reach it (a home directory): stay root but without any
        # capability, since CAP_SYS_RESOURCE and CAP_SYS_ADMIN are what let root ignore RLIMIT_NPROC.
        _drop_capabilities()
        processes += _count_processes(0)
        report["user"] = "root without capabilities"
    else:
        processes += _count_processes(os.getuid())
        report["user"] = str(os.getuid())
    # RLIMIT_NPROC counts every process of the real user: the count above leaves room for those running.
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    report["rlimits"] = True


def _nobody_can_run_python() -> bool:
    """Whether `nobody` can execute the interpreter and read its standard library (every directory on the
    way searchable by others)."""
    for target in (os.path.realpath(sys.executable), os.path.realpath(os.path.dirname(os.__file__))):
        path = target
        while path not in ("/", ""):
            if not os.stat(path).st_mode & 0o001:
                return False
            path = os.path.dirname(path)
    return True


def _drop_capabilities() -> None:
    """Empty the bounding set (so an exec cannot regain them) and the effective and permitted sets."""
    for capability in range(64):
        _libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    if _libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), f"capset: {_error()}")


def _count_processes(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                count += os.stat(f"/proc/{name}").st_uid == uid
    return count


def _run_as_init(argv: list[str], env: dict[str, str]) -> None:
    """In a new PID namespace the first child is its init: when it dies the kernel kills every process in
    the namespace, and it dies with this launcher (PDEATHSIG), so no descendant outlives a timeout."""
    child = os.fork()
    if child == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.execve(argv[0], argv, env)
    _, status = os.waitpid(child, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def main() -> None:
    config = json.loads(sys.argv[1])
    workdir = config["workdir"]
    report: dict[str, Any] = {"writes_confined": False, "tcp_denied": False, "signals_scoped": False}
    layers = config.get("layers", ["namespaces", "landlock"])
    in_user_namespace = _unshare_namespaces(report) if "namespaces" in layers else False
    report.setdefault("network_namespace", False)
    report.setdefault("pid_namespace", False)
    if "landlock" in layers:
        _landlock(workdir, report)
    _limit(config, report, in_user_namespace)
    sys.stderr.write("GALERNE-SANDBOX " + json.dumps(report) + "\n")
    sys.stderr.flush()
    os.chdir(workdir)
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    # The base interpreter, not a virtual environment's link to it: `nobody` may not reach the checkout, and
    # the programs need the standard library only (-I: no site-packages, no environment, no user directory).
    argv = [os.path.realpath(sys.executable), "-I", "-B", config["program"]]
    if report["pid_namespace"]:
        _run_as_init(argv, env)
    os.execve(argv[0], argv, env)


if __name__ == "__main__":
    main()
