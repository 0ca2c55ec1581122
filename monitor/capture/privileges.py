"""Give up root once the capture sockets are open.

Why here: opening AF_PACKET sockets, joining promiscuous mode and forcing a large receive buffer
need root (CAP_NET_RAW, CAP_NET_ADMIN); reading from the open sockets, their statistics and
``/sys/class/net`` do not. A parser bug in a process that handles hostile traffic should not run
as root, so the daemon opens its sockets, then calls :func:`drop_privileges` before the first
packet is parsed. A failed drop raises: a sensor configured to run as a user must never carry on
as root by accident.

Deployment note: after the switch the process can only import what the new user can read, so
the interpreter and the package must not live in a root-only directory (``/root/.pyenv``);
modules the daemon needs later should be imported before the drop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
from dataclasses import dataclass

PR_SET_NO_NEW_PRIVS = 38
_CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


class PrivilegeDropError(RuntimeError):
    """The switch to the configured user did not happen or did not stick; do not continue."""


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    capabilities: dict[str, int]  # CapInh/CapPrm/CapEff/CapAmb from /proc/self/status


def current_identity() -> Identity:
    caps: dict[str, int] = {}
    # Binary read: after the switch, a codec lookup may need a module the new user cannot read.
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                name = key.decode("latin-1")
                if name in _CAP_FIELDS:
                    caps[name] = int(value.strip(), 16)
    except OSError:
        pass
    return Identity(os.getuid(), os.getgid(), tuple(sorted(os.getgroups())), caps)


def _lookup(user: str, group: str | None) -> tuple[int, int]:
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeDropError(f"unknown user {user!r}") from None
    if group is None:
        return pw.pw_uid, pw.pw_gid
    try:
        gr = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
    except KeyError:
        raise PrivilegeDropError(f"unknown group {group!r}") from None
    return pw.pw_uid, gr.gr_gid


def _no_new_privs() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise PrivilegeDropError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(err)}")


def drop_privileges(user: str, group: str | None = None) -> Identity:
    """Become ``user`` (and ``group``, else the user's primary group) with no capabilities.

    Supplementary groups are cleared, real/effective/saved IDs all change so root cannot be
    regained, and ``no_new_privs`` stops a later exec from gaining privileges through set-user-ID
    or file capabilities. Everything is verified afterwards; any mismatch raises
    :class:`PrivilegeDropError`.
    """
    uid, gid = _lookup(user, group)
    if os.geteuid() != 0:
        # Not root: nothing to give up, but only if we already are who the configuration says.
        ident = current_identity()
        if os.geteuid() == uid and os.getegid() == gid:
            return ident
        raise PrivilegeDropError(
            f"running as uid {os.geteuid()}, not root: cannot switch to {user!r} (uid {uid})"
        )
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise PrivilegeDropError(f"cannot switch to {user!r}: {exc}") from exc
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeDropError(
            f"switch to {user!r} did not stick: uids {os.getresuid()}, gids {os.getresgid()}"
        )
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeDropError("root could be regained after the switch")
    _no_new_privs()
    ident = current_identity()
    if uid != 0:
        if ident.groups not in ((), (gid,)):
            raise PrivilegeDropError(f"supplementary groups remain: {ident.groups}")
        left = {k: v for k, v in ident.capabilities.items() if v}
        if left:
            raise PrivilegeDropError(f"capabilities remain after the switch: {left}")
    return ident
