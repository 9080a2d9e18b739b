"""Images in and out of the engine. The engine takes and returns 8-bit RGB as uint8 [H, W, 3]."""
import numpy as np
import torch

from ._errors import Error

_ACCEPTED = "a PIL.Image, a numpy uint8 [H, W, 3] array, or a torch uint8 [H, W, 3] / float [3, H, W] in [0, 1] tensor"
OUTPUT_TYPES = ("pil", "pt", "np")


def _describe(x) -> str:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{type(x).__module__}.{type(x).__name__} {x.dtype} {list(x.shape)}"
    return type(x).__module__ + "." + type(x).__qualname__


def to_engine(image, where: str) -> torch.Tensor:
    """Any accepted image -> uint8 [H, W, 3] tensor (no copy for a uint8 HWC tensor)."""
    try:
        from PIL import Image as PILImage

        if isinstance(image, PILImage.Image):
            # convert("RGB") drops alpha as the engine's decoders do (docs/library.md).
            return torch.from_numpy(np.array(image if image.mode == "RGB" else image.convert("RGB")))
    except ImportError:
        pass
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise Error("not an image", where, _ACCEPTED, _describe(image))
        return torch.from_numpy(np.ascontiguousarray(image))
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8 and image.dim() == 3 and image.shape[2] == 3:
            return image
        if image.is_floating_point() and image.dim() == 3 and image.shape[0] == 3:
            # torchvision's convention; the engine rounds half to even.
            lo, hi = (image.min().item(), image.max().item()) if image.numel() else (0.0, 0.0)
            if not (0.0 <= lo and hi <= 1.0):  # also NaN
                raise Error("image tensor values out of range", where, "values in [0, 1]", f"[{lo}, {hi}]")
            return image.detach().permute(1, 2, 0).float() * 255
        raise Error("not an image", where, _ACCEPTED, _describe(image))
    raise Error("not an image", where, _ACCEPTED, _describe(image))


def images_to_engine(images, where: str = "images") -> list:
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        raise Error("images must be a list", where, "a list of images", _describe(images))
    return [to_engine(im, f"{where}[{i}]") for i, im in enumerate(images)]


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise Error("unknown output_type", "output_type", ", ".join(OUTPUT_TYPES), repr(output_type))


def from_engine(t, output_type: str):
    """uint8 [H, W, 3] CPU tensor -> PIL.Image ("pil"), the tensor ("pt") or a numpy view ("np")."""
    if t is None or output_type == "pt":
        return t
    if output_type == "np":
        return t.numpy()
    from PIL import Image as PILImage

    return PILImage.fromarray(t.numpy(), "RGB")
