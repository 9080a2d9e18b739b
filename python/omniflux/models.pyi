# Stubs of omniflux.models (the components bound in python/src/module.cpp).
from typing import Optional, Tuple

import torch

class FluxTransformer:
    """The FLUX DiT (diffusers FluxTransformer2DModel), from a transformer/ folder."""

    @staticmethod
    def load(folder: str, device: str = "cpu", dtype: str = "auto") -> "FluxTransformer": ...
    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                pooled_projections: torch.Tensor, timestep: torch.Tensor, img_ids: torch.Tensor,
                txt_ids: torch.Tensor, guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Velocity [B, N, out_channels] for packed latents [B, N, in_channels], T5 states [B, T, joint_dim],
        CLIP pooled [B, pooled_dim], timestep [B] (sigma, t/1000), ids [N, 3] and [T, 3], and guidance
        [B] for guidance-distilled models (FLUX.1-dev)."""
    @property
    def dtype(self) -> torch.dtype: ...

class FluxVae:
    """The FLUX VAE (diffusers AutoencoderKL, 16 latent channels)."""

    @staticmethod
    def load(folder: str, device: str = "cpu", dtype: str = "auto") -> "FluxVae":
        """A diffusers vae/ folder (config.json + safetensors), loaded strictly."""
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents [B, 16, h, w] -> image [B, 3, 8h, 8w] in about [-1, 1]."""
    def encode(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Image [B, 3, H, W] in [-1, 1] (H, W multiples of 8) -> (mean, logvar) [B, 16, H/8, W/8]."""
    def scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(z - shift_factor) * scaling_factor, the pipelines' latent convention."""
    def unscale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents / scaling_factor + shift_factor, ready for decode."""
    @property
    def dtype(self) -> torch.dtype: ...

class ClipTextModel:
    """CLIP-L's text encoder as FLUX uses it."""

    @staticmethod
    def load(folder: str, device: str = "cpu", dtype: str = "auto") -> "ClipTextModel": ...
    def forward(self, input_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """ids [B, L] int64 -> (last_hidden_state [B, L, hidden], pooler_output [B, hidden])."""

class T5Encoder:
    """The T5 encoder (FLUX's text_encoder_2)."""

    @staticmethod
    def load(folder: str, device: str = "cpu", dtype: str = "auto") -> "T5Encoder": ...
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] int64 -> last_hidden_state [B, L, d_model]."""
