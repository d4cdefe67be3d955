"""Errors whose message is meant for a person: a member, a moderator, the CLI's user.

Anything raised as a `UserFacingError` is shown as it is (one line saying what to do); any
other exception is a bug: logged, and answered with a generic line.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """A one-line reason for whoever asked."""

    @property
    def reason(self) -> str:
        return str(self)
