"""pytest only: trial's ``mktemp`` writes below the working directory, which under
pytest is the checkout; run the session in a temporary directory instead (trial
itself already runs in ``_trial_temp``)."""

import os
from typing import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _work_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)
