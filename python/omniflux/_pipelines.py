"""The pipelines, as Python classes over the compiled ones (omniflux/_omniflux, python/src/module.cpp).

Each long call releases the GIL while the engine computes, shows a tqdm bar per stage unless
progress=False, and calls callback(stage, step, total) between steps: returning False cancels
and the call returns None. Ctrl-C raises KeyboardInterrupt within one step or token; the
pipeline stays usable. One call runs at a time per pipeline: other threads wait their turn.
"""
import os
from typing import Callable, Optional, Sequence, Union

from . import _omniflux as _C
from ._errors import Error
from ._images import check_output_type, from_engine, images_to_engine, to_engine

ProgressFn = Callable[[str, int, int], Optional[bool]]


def _runtime(device, dtype, offload, max_vram, threads, decode_graphs):
    return dict(device=str(device), dtype=str(dtype).replace("torch.", ""), offload=offload,
                max_vram=float(max_vram), threads=threads, decode_graphs=bool(decode_graphs))


def _run(progress: bool, callback, fn):
    from ._progress import Progress

    with Progress(progress, callback) as p:
        return fn(p)


def _turns(messages) -> list:
    """OpenAI-style messages -> [(role, [text or uint8 image tensor, ...])].

    content is a string or a list of {"type": "text", "text": ...} and {"type": "image", "image": ...}
    parts (the image a PIL.Image, numpy array or tensor)."""
    if isinstance(messages, str) or not isinstance(messages, (list, tuple)):
        raise Error("messages must be a list", "messages", "[{'role': ..., 'content': ...}, ...]", type(messages).__name__)
    turns = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise Error("not a message", where, "a dict with 'role' and 'content'", repr(msg)[:80])
        content = msg["content"]
        if isinstance(content, str):
            parts = [content]
        elif isinstance(content, (list, tuple)):
            parts = []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    parts.append(str(part["text"]))
                elif kind == "image":
                    parts.append(to_engine(part.get("image"), f"{where}.content[{j}].image"))
                else:
                    raise Error("unknown content part", f"{where}.content[{j}]",
                                "{'type': 'text', 'text': ...} or {'type': 'image', 'image': ...}", repr(part)[:80])
        else:
            raise Error("content must be a string or a list of parts", f"{where}.content", "str or list",
                        type(content).__name__)
        turns.append((str(msg["role"]), parts))
    return turns


class ChatAnswer(str):
    """A chat answer: the text (this string), and prompt_tokens, completion_tokens and
    finish_reason ("stop" or "length")."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def _chat_answer(r):
    if r is None:
        return None
    a = ChatAnswer(r[0])
    a.prompt_tokens, a.completion_tokens, a.finish_reason = r[1], r[2], r[3]
    return a


def _chat_options(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, stop, seed):
    return _C.ChatOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
                          repetition_penalty=repetition_penalty, top_k=top_k, stop=list(stop or []), seed=seed)


class Flux:
    """FLUX.1-dev text-to-image (diffusers FluxPipeline). Load with Flux.load(folder)."""

    def __init__(self, impl):
        self._impl = impl

    @classmethod
    def load(cls, folder: Union[str, os.PathLike], *, device="cpu", dtype="auto", offload: str = "none",
             max_vram: float = 0.0, threads: Optional[int] = None) -> "Flux":
        """Loads a FLUX.1-dev folder (transformer/, vae/, text_encoder/, text_encoder_2/, tokenizers,
        scheduler/). device "cpu", "cuda" or "cuda:N"; dtype "auto" (float32 on the CPU, bfloat16 on
        CUDA), "float32", "bfloat16" or "float16"; offload "none", "model" or "sequential"; threads:
        CPU threads for the whole process (None leaves them as they are)."""
        return cls(_C.Flux.load(os.fspath(folder), **_runtime(device, dtype, offload, max_vram, threads, False)))

    def generate(self, prompt: str, *, prompt_2: Optional[str] = None, negative_prompt: Optional[str] = None,
                 width: int = 1024, height: int = 1024, steps: int = 28, guidance: float = 3.5,
                 true_cfg_scale: float = 1.0, max_sequence_length: int = 512, seed: int = 0,
                 output_type: str = "pil", callback: Optional[ProgressFn] = None, progress: bool = True):
        """Text to image. Returns a PIL.Image (output_type "pt": uint8 [H, W, 3] tensor, "np": array),
        or None when the callback cancelled. Stages: encode_prompt, denoise (0..steps), decode."""
        check_output_type(output_type)
        t = _run(progress, callback, lambda cb: self._impl.generate(
            prompt, prompt_2, negative_prompt, width, height, steps, guidance, true_cfg_scale, max_sequence_length,
            seed, cb))
        return from_engine(t, output_type)


class UniWorld:
    """UniWorld-V1: text-to-image, editing with 1 to 4 reference images, and text answers.
    Load with UniWorld.load(model, flux=..., siglip=...)."""

    def __init__(self, impl):
        self._impl = impl

    @classmethod
    def load(cls, model: Union[str, os.PathLike], flux: Union[str, os.PathLike], siglip: Union[str, os.PathLike], *,
             device="cpu", dtype="auto", offload: str = "none", max_vram: float = 0.0,
             threads: Optional[int] = None, decode_graphs: bool = False) -> "UniWorld":
        """Loads the UniWorld-V1 folder, FLUX.1-dev (its VAE, text encoders and scheduler) and
        SigLIP2 (google/siglip2-so400m-patch16-512). Runtime arguments as Flux.load, plus
        decode_graphs: the LM's decoding as CUDA graphs (docs/gpu.md; on the CPU a check)."""
        return cls(_C.UniWorld.load(os.fspath(model), os.fspath(flux), os.fspath(siglip),
                                    **_runtime(device, dtype, offload, max_vram, threads, decode_graphs)))

    def run(self, prompt: str, images: Sequence = (), *, task: str = "auto", width: int = 1024, height: int = 1024,
            snap_to_ratio: bool = True, steps: int = 28, guidance: float = 3.5, seed: int = 42, use_t5: bool = True,
            max_new_tokens: int = 128, output_type: str = "pil", callback: Optional[ProgressFn] = None,
            progress: bool = True):
        """The whole request as omniflux-uniworld runs it: task "auto" lets the task head choose
        between an image and a text answer (a str). None when cancelled. Stages: vlm, siglip,
        text_encoders, denoise (0..steps), decode; answer for text."""
        check_output_type(output_type)
        ims = images_to_engine(images)
        r = _run(progress, callback, lambda cb: self._impl.run(
            prompt, ims, width, height, snap_to_ratio, steps, guidance, seed, use_t5, task, max_new_tokens, cb))
        return r if isinstance(r, str) else from_engine(r, output_type)

    def generate(self, prompt: str, *, width: int = 1024, height: int = 1024, steps: int = 28, guidance: float = 3.5,
                 seed: int = 42, use_t5: bool = True, output_type: str = "pil",
                 callback: Optional[ProgressFn] = None, progress: bool = True):
        """Text to image (the task head is not asked). Returns a PIL.Image, or None when cancelled."""
        return self.run(prompt, (), task="image", width=width, height=height, steps=steps, guidance=guidance,
                        seed=seed, use_t5=use_t5, output_type=output_type, callback=callback, progress=progress)

    def edit(self, prompt: str, images: Sequence, *, width: int = 1024, height: int = 1024,
             snap_to_ratio: bool = True, steps: int = 28, guidance: float = 3.5, seed: int = 42,
             use_t5: bool = True, output_type: str = "pil", callback: Optional[ProgressFn] = None,
             progress: bool = True):
        """Editing with 1 to 4 reference images ("Image 1" first). With snap_to_ratio the output size
        snaps to the official aspect-ratio table with anchor width x height (as cli.py)."""
        if not images:
            raise Error("edit needs at least one reference image", "images", "1 to 4 images", "none")
        return self.run(prompt, images, task="image", width=width, height=height, snap_to_ratio=snap_to_ratio,
                        steps=steps, guidance=guidance, seed=seed, use_t5=use_t5, output_type=output_type,
                        callback=callback, progress=progress)

    def answer(self, prompt: str, images: Sequence = (), *, max_new_tokens: int = 128,
               stream: Optional[Callable[[str], None]] = None, callback: Optional[ProgressFn] = None,
               progress: bool = False) -> Optional[str]:
        """A greedy text answer about 0 to 4 images (app.py; omniflux-uniworld --task text).
        stream(piece) receives the text as it comes; callback gets ("answer", tokens, max_new_tokens)."""
        parts = [prompt] + images_to_engine(images)
        return self._chat([("user", parts)], _chat_options(max_new_tokens, None, None, None, None, None, None, 0),
                          stream, callback, progress)

    def chat(self, messages, *, max_new_tokens: int = 128, temperature: Optional[float] = None,
             top_p: Optional[float] = None, top_k: Optional[int] = None, min_p: Optional[float] = None,
             repetition_penalty: Optional[float] = None, stop: Optional[Sequence[str]] = None, seed: int = 0,
             stream: Optional[Callable[[str], None]] = None, callback: Optional[ProgressFn] = None,
             progress: bool = False) -> Optional[str]:
        """A conversation (system, user and assistant turns; up to 4 images in all). Greedy unless a
        sampling argument is given. Returns a ChatAnswer (a str with token counts), None when cancelled."""
        return self._chat(_turns(messages), _chat_options(max_new_tokens, temperature, top_p, top_k, min_p,
                                                          repetition_penalty, stop, seed), stream, callback, progress)

    def _chat(self, turns, options, stream, callback, progress):
        return _chat_answer(_run(progress, callback, lambda cb: self._impl.chat(turns, options, stream, cb)))

    @staticmethod
    def output_size(width: int, height: int, image_sizes: Sequence = (), snap_to_ratio: bool = True):
        """The (width, height) a request makes: with reference images (their (width, height)) and
        snap_to_ratio, the official aspect-ratio table's size for anchor width x height."""
        h, w = _C.UniWorld.output_size(width, height, [tuple(s) for s in image_sizes], snap_to_ratio)
        return w, h


class XOmni:
    """X-Omni: text to image through autoregressive image codes and a FLUX decoder, and chat.
    Load with XOmni.load(model, flux=...); without flux only codes and chat work."""

    def __init__(self, impl):
        self._impl = impl

    @classmethod
    def load(cls, model: Union[str, os.PathLike], flux: Optional[Union[str, os.PathLike]] = None, *, device="cpu",
             dtype="auto", offload: str = "none", max_vram: float = 0.0, threads: Optional[int] = None,
             decode_graphs: bool = False) -> "XOmni":
        """Loads an X-Omni folder (X-Omni-En or -Zh) and, for decoding, FLUX.1-dev. Runtime
        arguments as UniWorld.load."""
        return cls(_C.XOmni.load(os.fspath(model), os.fspath(flux) if flux is not None else "",
                                 **_runtime(device, dtype, offload, max_vram, threads, decode_graphs)))

    def generate_codes(self, prompt: str, *, width: int = 1152, height: int = 1152, cfg_scale: float = 1.0,
                       negative_prompt: str = "", temperature: Optional[float] = None, top_k: Optional[int] = None,
                       top_p: Optional[float] = None, min_p: Optional[float] = None, seed: int = 1234,
                       callback: Optional[ProgressFn] = None, progress: bool = True):
        """The autoregressive phase alone: (height/16) x (width/16) image codes (ImageCodes), None
        when cancelled. Sampling defaults are generate.py's, merged with generation_config.json.
        Progress stage: tokens (done, total)."""
        return _run(progress, callback, lambda cb: self._impl.generate_codes(
            prompt, width, height, cfg_scale, negative_prompt, temperature, top_k, top_p, min_p, seed, cb))

    def decode(self, codes, *, steps: Optional[int] = None, cfg_scale: Optional[float] = None,
               cfg_scale_2: Optional[float] = None, seed: int = 1234, output_type: str = "pil",
               callback: Optional[ProgressFn] = None, progress: bool = True):
        """Image codes -> image through SigLIP-VQ and the FLUX decoder; decoder settings default
        to the model's vision_config. None when cancelled."""
        check_output_type(output_type)
        if not isinstance(codes, _C.ImageCodes):
            raise Error("not image codes", "codes", "omniflux.ImageCodes", type(codes).__name__)
        t = _run(progress, callback, lambda cb: self._impl.decode(codes, steps, cfg_scale, cfg_scale_2, seed, cb))
        return from_engine(t, output_type)

    def generate(self, prompt: str, *, width: int = 1152, height: int = 1152, cfg_scale: float = 1.0,
                 negative_prompt: str = "", temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None, seed: int = 1234,
                 decoder_steps: Optional[int] = None, decoder_cfg_scale: Optional[float] = None,
                 decoder_cfg_scale_2: Optional[float] = None, return_codes: bool = False, output_type: str = "pil",
                 callback: Optional[ProgressFn] = None, progress: bool = True):
        """Prompt -> codes -> image (omniflux-xomni generate: the seed drives both the sampling and
        the decoder's noise). Returns the image, or (image, codes) with return_codes; None when
        cancelled."""
        check_output_type(output_type)
        codes = self.generate_codes(prompt, width=width, height=height, cfg_scale=cfg_scale,
                                    negative_prompt=negative_prompt, temperature=temperature, top_k=top_k,
                                    top_p=top_p, min_p=min_p, seed=seed, callback=callback, progress=progress)
        if codes is None:
            return None
        image = self.decode(codes, steps=decoder_steps, cfg_scale=decoder_cfg_scale, cfg_scale_2=decoder_cfg_scale_2,
                            seed=seed, output_type=output_type, callback=callback, progress=progress)
        if image is None:
            return None
        return (image, codes) if return_codes else image

    def chat(self, prompt_or_messages, image=None, *, max_new_tokens: int = 512, temperature: Optional[float] = None,
             top_p: Optional[float] = None, top_k: Optional[int] = None, min_p: Optional[float] = None,
             repetition_penalty: Optional[float] = None, stop: Optional[Sequence[str]] = None, seed: int = 0,
             stream: Optional[Callable[[str], None]] = None, callback: Optional[ProgressFn] = None,
             progress: bool = False) -> Optional[str]:
        """A question about one image (chat.py; omniflux-xomni chat), a text-only question, or a
        conversation (a list of messages, one image in all). Greedy with the model's repetition
        penalty unless sampling arguments are given. stream(piece) receives the text as it comes.
        Returns the answer, None when cancelled."""
        sampled = any(v is not None for v in (temperature, top_p, top_k, min_p, repetition_penalty)) or stop
        if isinstance(prompt_or_messages, str) and image is not None and not sampled:
            im = to_engine(image, "image")
            return _run(progress, callback, lambda cb: self._impl.chat_image(im, prompt_or_messages, max_new_tokens,
                                                                             stream, cb))
        if isinstance(prompt_or_messages, str):
            turns = [("user", ([to_engine(image, "image")] if image is not None else []) + [prompt_or_messages])]
        else:
            if image is not None:
                raise Error("give the image inside the messages", "image", "None with messages", "an image")
            turns = _turns(prompt_or_messages)
        options = _chat_options(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, stop, seed)
        return _chat_answer(_run(progress, callback, lambda cb: self._impl.chat(turns, options, stream, cb)))

    @property
    def has_decoder(self) -> bool:
        return self._impl.has_decoder
