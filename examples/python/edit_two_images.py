"""UniWorld-V1 editing with two reference images ("Image 1" and "Image 2" in the prompt).

    python examples/python/edit_two_images.py --model UniWorld-V1 --flux FLUX.1-dev --siglip siglip2 \
        --device cuda first.jpg second.png -p "Put the cat of Image 1 on the sofa of Image 2." -o edit.png

The output size snaps to the official aspect-ratio table around W x H (--no-snap keeps W x H).
A callback stops the edit early when it returns False; here it only prints the stages.
"""
import argparse

from PIL import Image

import omniflux

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--model", required=True, help="the UniWorld-V1 folder")
p.add_argument("--flux", required=True, help="the FLUX.1-dev folder")
p.add_argument("--siglip", required=True, help="the SigLIP2 folder")
p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
p.add_argument("images", nargs=2, help="Image 1 and Image 2")
p.add_argument("-p", "--prompt", default="Put the object of Image 1 into the scene of Image 2.")
p.add_argument("-W", "--width", type=int, default=1024)
p.add_argument("-H", "--height", type=int, default=1024)
p.add_argument("--no-snap", action="store_true")
p.add_argument("--steps", type=int, default=28)
p.add_argument("--seed", type=int, default=42)
p.add_argument("-o", "--output", default="edit.png")
a = p.parse_args()


def show(stage, step, total):
    if stage != "denoise":
        print(f"{stage} done")
    return True  # False would cancel: edit() then returns None


pipe = omniflux.UniWorld.load(a.model, flux=a.flux, siglip=a.siglip, device=a.device)
refs = [Image.open(path) for path in a.images]
image = pipe.edit(a.prompt, refs, width=a.width, height=a.height, snap_to_ratio=not a.no_snap, steps=a.steps,
                  seed=a.seed, callback=show)
image.save(a.output)
print(f"wrote {a.output} ({image.width}x{image.height})")
