"""Shared fixtures; ``fake_discord`` is a started Discord emulator with discord.py redirected."""

from collections.abc import AsyncIterator

import pytest

from tests.fakediscord import FakeDiscord


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as emu:
        with emu.redirect():
            yield emu
    # An exception inside the emulator is a bug in it, whatever the test asserted.
    assert not emu.rest.errors, emu.rest.errors
