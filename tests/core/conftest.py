"""Fixtures for core tests."""

from __future__ import annotations

import pytest
from builders import profile_body
from torchproof.profile import Profile, parse_profile


@pytest.fixture
def profile() -> Profile:
    return parse_profile(profile_body())
