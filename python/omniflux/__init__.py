"""omniflux from Python: UniWorld-V1, X-Omni and FLUX.1-dev on the omniflux C++ engine.

    import omniflux
    pipe = omniflux.UniWorld.load("UniWorld-V1", flux="FLUX.1-dev", siglip="siglip2", device="cuda")
    image = pipe.generate("A lighthouse on a cliff at dusk", width=1024, height=1024, seed=42)
    image.save("out.png")

docs/python.md has the rest.
"""
# torch first: the engine links the same libtorch_cpu.so, which must be the one torch loaded.
import torch as _torch

from ._errors import Error
from . import _omniflux

if _torch.__version__.split("+")[0] != _omniflux.torch_version.split("+")[0]:
    raise ImportError(
        f"omniflux was built against torch {_omniflux.torch_version} but this environment has torch "
        f"{_torch.__version__}; install torch=={_omniflux.torch_version} or rebuild omniflux here "
        "(pip install ./python)")

from ._omniflux import ImageCodes, build_info, encode_png, load_image, set_num_threads  # noqa: E402
from ._pipelines import ChatAnswer, Flux, UniWorld, XOmni  # noqa: E402
from . import models  # noqa: E402

__version__ = _omniflux.__version__
__all__ = ["Error", "Flux", "UniWorld", "XOmni", "ImageCodes", "ChatAnswer", "models", "build_info", "encode_png",
           "load_image", "set_num_threads", "__version__"]
