"""Paths as the user would type them: one helper for every path batchgen prints."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def shown(path: str | os.PathLike[str]) -> str:
    """`path` resolved (no `..`, no symlinked folders), relative to the cwd when below it."""
    absolute = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    with contextlib.suppress(OSError):  # a folder we may not read: leave it as it is
        absolute = absolute.parent.resolve() / absolute.name  # the file itself may be a link
    text = str(absolute)
    try:
        relative = os.path.relpath(text)
    except ValueError:  # another drive (Windows)
        return text
    # `../../x` is shorter than `/srv/x` but no clearer, and it changes with where the command ran
    below = relative != os.pardir and not relative.startswith(os.pardir + os.sep)
    return relative if below and len(relative) < len(text) else text
