"""Shared test settings: hypothesis profiles and the matplotlib backend."""

import os

import matplotlib
import pytest
import torch
from hypothesis import HealthCheck, settings

matplotlib.use("Agg")

settings.register_profile(
    "default",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _masks_registered_by_a_test_leave_with_it():
    """A test (a doctest, a README snippet) that registers a mask unregisters it after, so the
    registry every other test sees is the package's own, whatever order the tests run in."""
    from flexframe.masks.registry import REGISTRY

    before = set(REGISTRY.list())
    yield
    for name in set(REGISTRY.list()) - before:
        REGISTRY.unregister(name)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: on a shared 2-core machine a second
    thread only waits on the other processes (``pytestmark = pytest.mark.usefixtures(...)``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
