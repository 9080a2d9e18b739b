"""UniWorld-V1 text to image from Python.

    python examples/python/text_to_image.py --model UniWorld-V1 --flux FLUX.1-dev --siglip siglip2 \
        --device cuda -p "A lighthouse on a cliff at dusk" -o lighthouse.png
"""
import argparse

import omniflux

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--model", required=True, help="the UniWorld-V1 folder")
p.add_argument("--flux", required=True, help="the FLUX.1-dev folder")
p.add_argument("--siglip", required=True, help="the SigLIP2 folder")
p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
p.add_argument("-p", "--prompt", default="A lighthouse on a cliff at dusk")
p.add_argument("-W", "--width", type=int, default=1024)
p.add_argument("-H", "--height", type=int, default=1024)
p.add_argument("--steps", type=int, default=28)
p.add_argument("--seed", type=int, default=42)
p.add_argument("-o", "--output", default="out.png")
a = p.parse_args()

pipe = omniflux.UniWorld.load(a.model, flux=a.flux, siglip=a.siglip, device=a.device)
image = pipe.generate(a.prompt, width=a.width, height=a.height, steps=a.steps, seed=a.seed)
image.save(a.output)
print(f"wrote {a.output} ({image.width}x{image.height})")
