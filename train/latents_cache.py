"""VAE latents kept on disk, so that later epochs skip the VAE.

An entry holds the VAE's latent *distribution* (mean and log-variance) of one image
as transformed: its key (built by `agfsync.train.data.PairReader`) is the digest of
the image bytes plus resolution, flip and crop. Latents are still sampled from the
distribution at every step, so training with the cache is the same as without.

Validity: a key names exactly one input to the VAE, so an entry can never be stale
for its key. Random crops would give (almost) every epoch new keys, which is why the
configuration refuses `cache_latents` with `random_crop`; with random flips each
image is cached at most twice. Entries live in a folder named after the VAE and its
dtype, so switching VAE never reads another VAE's latents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from agfsync.atomic import write_atomically


class LatentsCache:
    def __init__(self, directory: Path, vae_identity: str) -> None:
        digest = hashlib.sha256(vae_identity.encode()).hexdigest()[:16]
        self.directory = directory / digest
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def distribution_parameters(
        self,
        pixel_values: torch.Tensor,
        keys: list[str],
        encode: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """Parameters for each image: read from disk when cached, else `encode`d (only the
        missing images, in one batch) and stored."""
        found = {
            index: load_file(self._path(key))["parameters"]
            for index, key in enumerate(keys)
            if self._path(key).is_file()
        }
        missing = [index for index in range(len(keys)) if index not in found]
        if missing:
            encoded = encode(pixel_values[missing])
            for index, parameters in zip(missing, encoded, strict=True):
                found[index] = parameters
                self._store(keys[index], parameters)
        device = pixel_values.device
        return torch.stack([found[index].to(device) for index in range(len(keys))])

    def _store(self, key: str, parameters: torch.Tensor) -> None:
        # A concurrent reader (another process) never sees half a file.
        tensors = {"parameters": parameters.detach().contiguous().cpu()}
        write_atomically(self._path(key), lambda partial: save_file(tensors, partial))
