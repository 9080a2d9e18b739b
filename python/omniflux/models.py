"""Single components on torch tensors, for advanced use: each loads from its folder and runs on
the tensors you give it (same device and dtype as the model; results are torch tensors).

    vae = omniflux.models.FluxVae.load("FLUX.1-dev/vae", device="cuda")
    image = vae.decode(vae.unscale_latents(latents))   # [B, 3, 8h, 8w] in about [-1, 1]
"""
from ._omniflux.models import ClipTextModel, FluxTransformer, FluxVae, T5Encoder

__all__ = ["ClipTextModel", "FluxTransformer", "FluxVae", "T5Encoder"]
