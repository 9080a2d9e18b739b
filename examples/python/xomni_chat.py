"""X-Omni: a question about an image, the answer streamed as it is generated, then a follow-up
turn of the same conversation.

    python examples/python/xomni_chat.py --model X-Omni-En --device cuda photo.jpg -p "Describe it."
"""
import argparse

from PIL import Image

import omniflux

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--model", required=True, help="the X-Omni folder (X-Omni-En or X-Omni-Zh)")
p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
p.add_argument("image")
p.add_argument("-p", "--prompt", default="Describe this image.")
p.add_argument("--follow-up", default="What colours stand out?")
p.add_argument("--max-new-tokens", type=int, default=512)
a = p.parse_args()

xo = omniflux.XOmni.load(a.model, device=a.device)  # no FLUX folder: chat needs no decoder
picture = Image.open(a.image)
answer = xo.chat(a.prompt, image=picture, max_new_tokens=a.max_new_tokens,
                 stream=lambda piece: print(piece, end="", flush=True))
print()
messages = [
    {"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": a.prompt}]},
    {"role": "assistant", "content": answer},
    {"role": "user", "content": a.follow_up},
]
follow = xo.chat(messages, max_new_tokens=a.max_new_tokens)
print(follow)
print(f"({follow.prompt_tokens} prompt tokens, {follow.completion_tokens} answer tokens, {follow.finish_reason})")
