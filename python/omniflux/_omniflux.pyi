# Stubs of the compiled module (python/src/module.cpp). The public names are re-exported by
# omniflux/__init__.py; the pipeline classes users call are the Python ones in _pipelines.py.
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

__version__: str
torch_version: str

ProgressFn = Optional[Callable[[str, int, int], Optional[bool]]]
TextFn = Optional[Callable[[str], None]]
Turns = List[Tuple[str, List[Union[str, torch.Tensor]]]]

def build_info() -> str:
    """What this build holds (version, LibTorch, CUDA), as text."""

def set_num_threads(n: int) -> None:
    """CPU threads of everything that computes (LibTorch, MKL, OpenBLAS); 0 = all hardware threads."""

def load_image(path: str) -> torch.Tensor:
    """Decodes a PNG, JPEG or WebP file as the command-line tools do: uint8 [H, W, 3]."""

def encode_png(image: torch.Tensor, text: Sequence[Tuple[str, str]] = ...) -> bytes:
    """The PNG the command-line tools write for a uint8 [H, W, 3] image, with tEXt chunks."""

def _error_message(what: str, where: str, expected: str, got: str) -> str: ...

class ImageCodes:
    """X-Omni image codes: a rows x cols grid, row-major, and the decoder's prompt."""

    prompt: str
    rows: int
    cols: int
    codes: List[int]
    def __init__(self, prompt: str, rows: int, cols: int, codes: Sequence[int]) -> None: ...

class ChatOptions:
    def __init__(self, max_new_tokens: int, temperature: Optional[float], top_p: Optional[float],
                 min_p: Optional[float], repetition_penalty: Optional[float], top_k: Optional[int],
                 stop: List[str], seed: int) -> None: ...

ChatResult = Optional[Tuple[str, int, int, str]]

class Flux:
    @staticmethod
    def load(folder: str, device: str = ..., dtype: str = ..., offload: str = ..., max_vram: float = ...,
             threads: Optional[int] = ...) -> "Flux": ...
    def generate(self, prompt: str, prompt_2: Optional[str], negative_prompt: Optional[str], width: int, height: int,
                 steps: int, guidance: float, true_cfg_scale: float, max_sequence_length: int, seed: int,
                 callback: ProgressFn) -> Optional[torch.Tensor]: ...

class UniWorld:
    @staticmethod
    def load(model: str, flux: str, siglip: str, device: str = ..., dtype: str = ..., offload: str = ...,
             max_vram: float = ..., threads: Optional[int] = ...) -> "UniWorld": ...
    def run(self, prompt: str, images: List[torch.Tensor], width: int, height: int, snap_to_ratio: bool, steps: int,
            guidance: float, seed: int, use_t5: bool, task: str, max_new_tokens: int,
            callback: ProgressFn) -> Union[None, str, torch.Tensor]: ...
    def chat(self, turns: Turns, options: ChatOptions, on_text: TextFn, callback: ProgressFn) -> ChatResult: ...
    @staticmethod
    def output_size(width: int, height: int, image_sizes: List[Tuple[int, int]],
                    snap_to_ratio: bool) -> Tuple[int, int]: ...

class XOmni:
    @staticmethod
    def load(model: str, flux: str, device: str = ..., dtype: str = ..., offload: str = ..., max_vram: float = ...,
             threads: Optional[int] = ...) -> "XOmni": ...
    def generate_codes(self, prompt: str, width: int, height: int, cfg_scale: float, negative_prompt: str,
                       temperature: Optional[float], top_k: Optional[int], top_p: Optional[float],
                       min_p: Optional[float], seed: int, callback: ProgressFn) -> Optional[ImageCodes]: ...
    def decode(self, codes: ImageCodes, steps: Optional[int], cfg_scale: Optional[float],
               cfg_scale_2: Optional[float], seed: int, callback: ProgressFn) -> Optional[torch.Tensor]: ...
    def chat_image(self, image: torch.Tensor, question: str, max_new_tokens: int, on_text: TextFn,
                   callback: ProgressFn) -> Optional[str]: ...
    def chat(self, turns: Turns, options: ChatOptions, on_text: TextFn, callback: ProgressFn) -> ChatResult: ...
    @property
    def has_decoder(self) -> bool: ...
