import pytest

from agfsync.errors import ConfigurationError
from agfsync.models import _held_device_locks, claim_device, resolve_dtype, resolve_model


class TestClaimDevice:
    def test_replicas_get_distinct_devices_until_all_are_taken(self, tmp_path) -> None:
        held_before = len(_held_device_locks)
        try:
            assert [claim_device(3, tmp_path) for _ in range(3)] == [0, 1, 2]
            assert claim_device(3, tmp_path) in {0, 1, 2}
        finally:
            while len(_held_device_locks) > held_before:
                _held_device_locks.pop().close()

    def test_a_released_claim_is_reused(self, tmp_path) -> None:
        held_before = len(_held_device_locks)
        try:
            assert claim_device(2, tmp_path) == 0
            _held_device_locks.pop().close()
            assert claim_device(2, tmp_path) == 0
        finally:
            while len(_held_device_locks) > held_before:
                _held_device_locks.pop().close()


class TestModelReferences:
    def test_unknown_tiny_model_names_the_available_ones(self) -> None:
        with pytest.raises(ConfigurationError, match="tiny:stable-diffusion"):
            resolve_model("tiny:nope")

    def test_hub_ids_and_folders_pass_through(self) -> None:
        assert resolve_model("org/model") == "org/model"

    def test_unknown_dtype_is_rejected(self) -> None:
        import torch

        with pytest.raises(ConfigurationError, match="Unknown dtype"):
            resolve_dtype("float8", torch.device("cpu"))
