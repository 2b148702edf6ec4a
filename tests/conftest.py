"""The `profile` fixture: the parsed 20.06 profile, for the tests of planning and judging."""

from __future__ import annotations

import pytest
from torchproof.profile import Profile, parse_profile

from tests.support.builders import profile_body


@pytest.fixture
def profile() -> Profile:
    return parse_profile(profile_body())
