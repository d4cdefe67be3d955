"""Guild and member ids: Discord snowflakes or simple names (the CLI's "demo"), never paths.

Guild ids name folders (models, tracks, uploads), so only letters, digits, - and _ pass.
"""

from __future__ import annotations

import re

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None
