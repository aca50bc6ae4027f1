"""Private by default on a shared node: what a run writes, only its user can read or change.

Every llm2llm process sets its umask to 077 before it writes anything (the command line and `boost`
do), so run folders, caches, logs, checkpoints and the sockets of the servers it starts are created
0700 / 0600, whatever the user's own umask. A folder llm2llm writes into must belong to the user and
be writable by nobody else: anyone who can write there could plant files a run then reads (a
prepared checkpoint, a symlink, a cache entry), so such a folder is refused with one line, before
anything runs. A folder created earlier under a looser umask but writable only by its owner is
closed (chmod 0700) when a run opens it.

The one exception is a generation cache shared with a group (`cache_group`): its folder is 2770 and
its entries 0660, so members of that group can read each other's answers and add their own, and
a cache read trusts what any of them wrote (docs/RELIABILITY.md).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from llm2llm.errors import UserError

PRIVATE_UMASK = 0o077


def make_private() -> None:
    """This process and everything it starts create files 0600 and folders 0700."""
    os.umask(PRIVATE_UMASK)


def current_umask() -> int:
    """The umask, read without changing it (os.umask can only be read by setting it, which races
    with another thread creating a file)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def folder_problem(path: Path, what: str, group: bool = False, sticky_ok: bool = False) -> str | None:
    """Why llm2llm must not write into the existing folder `path` (named `what` in the message), or
    None: it belongs to another user (for a group folder: to a group this user is not in), or others
    can write to it (the group too, unless `group`). sticky_ok: a world-writable folder with the
    sticky bit (/tmp) is fine, since nobody can then rename or remove what another user put there."""
    info = os.stat(path)
    mine = info.st_uid == os.getuid() or (group and info.st_gid in {os.getgid(), *os.getgroups()})
    if not mine:
        return (
            f"{what} {path} belongs to another user (uid {info.st_uid}); llm2llm writes only into folders you own"
            + (" or share through your group" if group else "")
            + ": point it at a folder of your own"
        )
    loose = stat.S_IWOTH if group else stat.S_IWGRP | stat.S_IWOTH
    mode = stat.S_IMODE(info.st_mode)
    if mode & loose and not (sticky_ok and mode & stat.S_ISVTX):
        who = "every user" if mode & stat.S_IWOTH else "its group"
        fix = "chmod o-w" if group else "chmod 700"
        return (
            f"{what} {path} is writable by {who} (mode {mode:o}), who could plant files a run reads; "
            f"`{fix} {path}` if you trust what is in it, then rerun"
        )
    return None


def private_folder(path: Path, what: str, group: bool = False) -> Path:
    """`path` created or checked (folder_problem) and closed to others: 0700, or 2770 for a group."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if problem := folder_problem(path, what, group):
        raise UserError(problem)
    info = path.stat()
    wanted = 0o2770 if group else 0o700
    if stat.S_IMODE(info.st_mode) != wanted and info.st_uid == os.getuid():
        os.chmod(path, wanted)
    return path
