import pytest

from tomo4d.phantom import make_experiment


@pytest.fixture(scope="session")
def exp():
    """The small experiment shared by the phantom tests: 64^3, T0..T3 (0, 0.425, 0.85, 0.5 SoC)."""
    return make_experiment(shape=(64, 64, 64), n_steps=4, seed=3)
