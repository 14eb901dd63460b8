"""Names that become folder names: topics, consumer groups, pipelines.

One rule for all of them, so that no name can reach outside its folder or collide with
another: 1 to 200 letters, digits, ``.``, ``_`` or ``-``, checked on the whole string
(``fullmatch``: a trailing newline is refused, as ``re.match`` with ``$`` would not), and
never ``.`` or ``..``.

Example:
    >>> check_name("sensor-events", "topic")
    'sensor-events'
    >>> try:
    ...     check_name("..", "pipeline")
    ... except ConfigError as exc:
    ...     print(exc)  # doctest: +ELLIPSIS
    invalid pipeline name '..': use 1 to 200 letters, digits, '.', '_' or '-' (it becomes...
"""

from __future__ import annotations

import re

from tidal.errors import ConfigError

__all__ = ["check_name"]

_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def check_name(name: str, what: str) -> str:
    """Check a topic, group or pipeline name; return it unchanged.

    Args:
        name: the name.
        what: what it names, for the message (``"topic"``, ``"pipeline"``...).

    Raises:
        ConfigError: naming the rule.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        msg = (
            f"invalid {what} name {name!r}: use 1 to 200 letters, digits, '.', '_' or '-' "
            "(it becomes a folder name)"
        )
        raise ConfigError(msg)
    return name
