"""The Python package (python/, docs/python.md) on the tiny random-weight folders: each pipeline's
result equals the command-line tool's PNG (or text) byte for byte for the same request; images go
in as PIL, numpy and torch and come out as PIL, numpy and torch; the callback cancels; Ctrl-C stops
within one step and leaves the pipeline usable; bad input raises omniflux.Error naming the field;
two threads on one pipeline are serialised; components keep the caller's tensors. Run by ctest as
python.package (PYTHONPATH=build/python)."""
import _thread
import json
import os
import subprocess
import tempfile
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import omniflux

BIN = os.environ["OMNIFLUX_BIN_DIR"]
TOKENIZERS = os.environ["OMNIFLUX_TOKENIZERS"]
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
THREADS = 2  # the same for the tools and the package, so the float reductions are the same


@pytest.fixture(scope="module")
def tiny():
    with tempfile.TemporaryDirectory(prefix="omniflux-python-") as tmp:
        subprocess.run([os.path.join(BIN, "omniflux-tiny"), "--out", tmp, "--seed", "3", "--only", "flux_1_dev",
                        "--only", "uniworld_v1", "--only", "siglip2", "--only", "x_omni", "--tokenizers", TOKENIZERS],
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
        # Two reference pictures, written by PIL.
        x, y = np.meshgrid(np.arange(48), np.arange(32))
        a = np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8)
        b = np.stack([255 - y * 6, x * 2, (x * y) % 256], -1).astype(np.uint8)[:, :40]
        Image.fromarray(a).save(os.path.join(tmp, "a.png"))
        Image.fromarray(b).save(os.path.join(tmp, "b.png"))
        yield tmp


def tool(name, *args):
    r = subprocess.run([os.path.join(BIN, name), *args, "--threads", str(THREADS), "--quiet"], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    return r.stdout.decode()


def same_png(image, png_path):
    """The PNG the tools write for `image` (with the tool's own text chunks) equals the file."""
    with Image.open(png_path) as im:
        text = list(im.text.items())
    t = torch.from_numpy(np.array(image)) if isinstance(image, Image.Image) else image
    return omniflux.encode_png(t, text) == open(png_path, "rb").read()


@pytest.fixture(scope="module")
def uniworld(tiny):
    return omniflux.UniWorld.load(os.path.join(tiny, "uniworld-v1"), flux=os.path.join(tiny, "flux.1-dev"),
                                  siglip=os.path.join(tiny, "siglip2"), threads=THREADS)


@pytest.fixture(scope="module")
def xomni(tiny):
    return omniflux.XOmni.load(os.path.join(tiny, "x-omni"), flux=os.path.join(tiny, "flux.1-dev"), threads=THREADS)


def uw_tool(tiny, *args):
    return tool("omniflux-uniworld", "--model", os.path.join(tiny, "uniworld-v1"), "--flux",
                os.path.join(tiny, "flux.1-dev"), "--siglip", os.path.join(tiny, "siglip2"), *args)


PROMPT = "A lighthouse on a cliff at dusk"


# ---- one LibTorch --------------------------------------------------------------------------------

def test_one_libtorch_in_the_process(uniworld):
    maps = open("/proc/self/maps").read().splitlines()
    paths = {line.split()[-1] for line in maps if "libtorch_cpu.so" in line}
    assert len(paths) == 1, paths
    assert os.path.dirname(next(iter(paths))) == os.path.join(os.path.dirname(torch.__file__), "lib")


# ---- equal to the tools ----------------------------------------------------------------------------

def test_uniworld_text_to_image_equals_cli(tiny, uniworld):
    out = os.path.join(tiny, "uw_t2i.png")
    uw_tool(tiny, "-p", PROMPT, "-W", "64", "-H", "48", "--steps", "2", "--seed", "42", "--task", "image", "-o", out)
    image = uniworld.generate(PROMPT, width=64, height=48, steps=2, seed=42, progress=False)
    assert isinstance(image, Image.Image) and image.size == (64, 48) and image.mode == "RGB"
    assert same_png(image, out)


def test_uniworld_two_image_edit_equals_cli(tiny, uniworld):
    out = os.path.join(tiny, "uw_edit.png")
    prompt = "Put the object of Image 1 into the scene of Image 2."
    uw_tool(tiny, "-p", prompt, "-i", os.path.join(tiny, "a.png"), "-i", os.path.join(tiny, "b.png"), "-W", "64",
            "-H", "64", "--steps", "2", "--seed", "5", "--task", "image", "-o", out)
    a = Image.open(os.path.join(tiny, "a.png"))       # PIL in
    b = np.array(Image.open(os.path.join(tiny, "b.png")))  # numpy in
    image = uniworld.edit(prompt, [a, b], width=64, height=64, steps=2, seed=5, progress=False)
    assert same_png(image, out)
    # The same request with torch tensors in: uint8 [H, W, 3] and float [3, H, W] in [0, 1].
    ta = torch.from_numpy(np.array(a))
    tb = torch.from_numpy(b).permute(2, 0, 1).float() / 255
    t = uniworld.edit(prompt, [ta, tb], width=64, height=64, steps=2, seed=5, output_type="pt", progress=False)
    assert t.dtype == torch.uint8 and t.device.type == "cpu" and tuple(t.shape) == (image.size[1], image.size[0], 3)
    assert torch.equal(t, torch.from_numpy(np.array(image)))


def test_uniworld_answer_equals_cli(tiny, uniworld):
    q = "What is in this picture?"
    stdout = uw_tool(tiny, "-p", q, "-i", os.path.join(tiny, "a.png"), "--task", "text", "--max-new-tokens", "8")
    pieces = []
    answer = uniworld.answer(q, [Image.open(os.path.join(tiny, "a.png"))], max_new_tokens=8, stream=pieces.append)
    assert stdout == answer + "\n"
    assert "".join(pieces) == answer
    assert answer.finish_reason in ("stop", "length") and answer.completion_tokens >= 1


def test_flux_equals_cli(tiny):
    out = os.path.join(tiny, "flux.png")
    tool("omniflux-flux", "--model", os.path.join(tiny, "flux.1-dev"), "-p", "a red cube", "-W", "32", "-H", "48",
         "--steps", "2", "--seed", "9", "-o", out)
    pipe = omniflux.Flux.load(os.path.join(tiny, "flux.1-dev"), threads=THREADS)
    image = pipe.generate("a red cube", width=32, height=48, steps=2, seed=9, progress=False)
    assert same_png(image, out)


def test_xomni_generate_and_decode_equal_cli(tiny, xomni):
    out, codes_json = os.path.join(tiny, "xo.png"), os.path.join(tiny, "xo.codes.json")
    tool("omniflux-xomni", "generate", "--model", os.path.join(tiny, "x-omni"), "--flux",
         os.path.join(tiny, "flux.1-dev"), "-p", "a red cube on a wooden table", "-W", "64", "-H", "48", "--seed", "7",
         "--codes-out", codes_json, "-o", out)
    image, codes = xomni.generate("a red cube on a wooden table", width=64, height=48, seed=7, return_codes=True,
                                  progress=False)
    ref = json.load(open(codes_json))
    assert (codes.prompt, codes.rows, codes.cols, codes.codes) == (ref["prompt"], ref["rows"], ref["cols"], ref["codes"])
    assert same_png(image, out)
    # The codes decode again to the same picture, also from codes built by hand.
    again = xomni.decode(omniflux.ImageCodes(ref["prompt"], ref["rows"], ref["cols"], ref["codes"]), seed=7,
                         output_type="np", progress=False)
    assert np.array_equal(again, np.array(image))


def test_xomni_chat_equals_cli(tiny, xomni):
    q = "What is in this picture?"
    stdout = tool("omniflux-xomni", "chat", "--model", os.path.join(tiny, "x-omni"), "-i",
                  os.path.join(tiny, "a.png"), "-p", q, "--max-new-tokens", "8")
    answer = xomni.chat(q, image=Image.open(os.path.join(tiny, "a.png")), max_new_tokens=8)
    assert stdout == answer + "\n"
    # A conversation with a system turn and history answers too (no tool does this one).
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": [{"type": "image", "image": np.array(Image.open(os.path.join(tiny, "b.png")))},
                                             {"type": "text", "text": q}]}]
    a = xomni.chat(messages, max_new_tokens=4)
    assert isinstance(a, str) and a.prompt_tokens > 0 and 1 <= a.completion_tokens <= 4
    # decode_graphs: the same answer (on the CPU the graph's steps are replayed with the host frozen).
    graphs = omniflux.XOmni.load(os.path.join(tiny, "x-omni"), decode_graphs=True)
    assert graphs.chat(q, image=Image.open(os.path.join(tiny, "a.png")), max_new_tokens=8) == answer


# ---- progress, cancellation, Ctrl-C -----------------------------------------------------------------

def test_callback_sees_the_stages_and_cancels(uniworld):
    seen = []
    image = uniworld.generate(PROMPT, width=32, height=32, steps=3, seed=1, progress=False,
                              callback=lambda *a: seen.append(a))
    assert image is not None
    assert ("denoise", 3, 3) in seen and seen[-1][0] == "decode" and seen[0][0] == "vlm"
    seen.clear()

    def stop_at_1(stage, step, total):
        seen.append((stage, step))
        return not (stage == "denoise" and step == 1)

    assert uniworld.generate(PROMPT, width=32, height=32, steps=3, seed=1, progress=False, callback=stop_at_1) is None
    assert seen[-1] == ("denoise", 1)
    # Still usable, and the same as before.
    again = uniworld.generate(PROMPT, width=32, height=32, steps=3, seed=1, progress=False)
    assert np.array_equal(np.array(again), np.array(image))


def test_callback_exception_propagates(xomni):
    def boom(stage, step, total):
        if step == 2:
            raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        xomni.generate_codes("x", width=32, height=32, progress=False, callback=boom)
    assert xomni.generate_codes("x", width=32, height=32, progress=False) is not None


def test_keyboard_interrupt_stops_within_one_step(uniworld):
    seen = []

    def ctrl_c_at_1(stage, step, total):
        seen.append((stage, step))
        if stage == "denoise" and step == 1:
            _thread.interrupt_main()  # as Ctrl-C would: the signal is handled at the next check

    with pytest.raises(KeyboardInterrupt):
        uniworld.generate(PROMPT, width=32, height=32, steps=4, seed=1, progress=False, callback=ctrl_c_at_1)
    assert seen[-1] == ("denoise", 1)  # the engine never reported step 2
    assert uniworld.generate(PROMPT, width=32, height=32, steps=1, seed=1, progress=False) is not None


def test_progress_bar(uniworld, capsys):
    uniworld.generate(PROMPT, width=32, height=32, steps=2, seed=1)
    assert "denoise" in capsys.readouterr().err


# ---- errors -------------------------------------------------------------------------------------------

def test_bad_inputs_raise_omniflux_error(tiny, uniworld, xomni):
    with pytest.raises(omniflux.Error) as e:
        uniworld.generate(PROMPT, width=50, height=32, steps=1, progress=False)
    assert isinstance(e.value, ValueError) and "width" in e.value.where.lower() + e.value.what.lower()
    assert e.value.got == "50" or "50" in e.value.got
    with pytest.raises(omniflux.Error) as e:
        uniworld.edit(PROMPT, [Image.open(os.path.join(tiny, "a.png")), np.zeros((4, 4), np.uint8)], progress=False)
    assert e.value.where == "images[1]" and "[4, 4]" in e.value.got
    with pytest.raises(omniflux.Error) as e:
        uniworld.edit(PROMPT, [np.zeros((8, 8, 3), np.uint8)] * 5, width=32, height=32, steps=1, progress=False)
    assert e.value.expected == "0 to 4" and e.value.got == "5"
    with pytest.raises(omniflux.Error) as e:
        uniworld.edit(PROMPT, [torch.full((3, 8, 8), 1.5)], width=32, height=32, steps=1, progress=False)
    assert (e.value.where, e.value.expected) == ("images[0]", "values in [0, 1]")
    with pytest.raises(omniflux.Error) as e:  # checked by the engine, named by the binding
        omniflux.encode_png(torch.zeros(8, 8, 3, dtype=torch.int32))
    assert e.value.where == "image" and "int" in e.value.got.lower()
    with pytest.raises(omniflux.Error) as e:
        uniworld.generate(PROMPT, output_type="latent", progress=False)
    assert e.value.where == "output_type"
    with pytest.raises(omniflux.Error) as e:
        omniflux.Flux.load(os.path.join(tiny, "flux.1-dev"), device="tpu")
    assert "device" in e.value.where
    with pytest.raises(omniflux.Error) as e:
        omniflux.UniWorld.load(os.path.join(tiny, "nowhere"), flux=tiny, siglip=tiny)
    assert "nowhere" in e.value.where
    with pytest.raises(omniflux.Error) as e:
        xomni.chat([{"role": "user", "content": [{"type": "video"}]}])
    assert e.value.where == "messages[0].content[0]"
    with pytest.raises(omniflux.Error) as e:
        xomni.generate_codes("x", width=40, height=32, progress=False)
    assert "width" in str(e.value).lower()


# ---- threads ------------------------------------------------------------------------------------------

def test_two_threads_on_one_pipeline_are_serialised(uniworld):
    ref = np.array(uniworld.generate(PROMPT, width=32, height=32, steps=2, seed=3, progress=False))
    results, errors = [], []

    def work():
        try:
            results.append(np.array(uniworld.generate(PROMPT, width=32, height=32, steps=2, seed=3, progress=False)))
        except BaseException as ex:  # noqa: B902 - reported below
            errors.append(ex)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3 and all(np.array_equal(r, ref) for r in results)


def test_a_call_from_its_own_callback_is_refused(uniworld):
    caught = []

    def nested(stage, step, total):
        if stage == "denoise" and step == 1 and not caught:
            try:
                uniworld.generate(PROMPT, width=32, height=32, steps=1, progress=False)
            except omniflux.Error as ex:
                caught.append(ex)

    assert uniworld.generate(PROMPT, width=32, height=32, steps=2, progress=False, callback=nested) is not None
    assert caught and "own callback" in caught[0].what


# ---- components -----------------------------------------------------------------------------------------

def test_components_take_and_return_torch_tensors(tiny):
    vae = omniflux.models.FluxVae.load(os.path.join(tiny, "flux.1-dev", "vae"))
    z = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(0))
    x = vae.decode(z)
    assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.device == z.device
    assert tuple(x.shape) == (1, 3, 32, 48)
    mean, logvar = vae.encode(x.clamp(-1, 1))
    assert tuple(mean.shape) == (1, 16, 4, 6) and vae.dtype == torch.float32
    # The DiT with diffusers' argument names; the tiny config's sizes.
    dit_dir = os.path.join(tiny, "flux.1-dev", "transformer")
    cfg = json.load(open(os.path.join(dit_dir, "config.json")))
    dit = omniflux.models.FluxTransformer.load(dit_dir)
    g = torch.Generator().manual_seed(1)
    n, t = 12, 5
    v = dit.forward(hidden_states=torch.randn(1, n, cfg["in_channels"], generator=g),
                    encoder_hidden_states=torch.randn(1, t, cfg["joint_attention_dim"], generator=g),
                    pooled_projections=torch.randn(1, cfg["pooled_projection_dim"], generator=g),
                    timestep=torch.tensor([0.5]), img_ids=torch.zeros(n, 3), txt_ids=torch.zeros(t, 3),
                    guidance=torch.tensor([3.5]))
    assert type(v) is torch.Tensor and tuple(v.shape) == (1, n, cfg["in_channels"]) and v.dtype == dit.dtype
    assert torch.isfinite(v).all()
    clip = omniflux.models.ClipTextModel.load(os.path.join(tiny, "flux.1-dev", "text_encoder"))
    hidden, pooled = clip.forward(torch.tensor([[1, 2, 3]]))
    assert hidden.shape[:2] == (1, 3) and pooled.shape[0] == 1
    with pytest.raises(omniflux.Error):
        omniflux.models.FluxVae.load(os.path.join(tiny, "nowhere"))


def child_env():
    """The environment for a child Python that imports this same omniflux, from any folder."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(omniflux.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))


# ---- the examples (examples/python) ---------------------------------------------------------------------

def example(name, *args):
    import sys

    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python", name), *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    return r.stdout.decode()


def test_examples_run_on_the_tiny_folders(tiny):
    folders = ["--model", os.path.join(tiny, "uniworld-v1"), "--flux", os.path.join(tiny, "flux.1-dev"), "--siglip",
               os.path.join(tiny, "siglip2")]
    out = os.path.join(tiny, "ex_t2i.png")
    assert "wrote" in example("text_to_image.py", *folders, "-W", "32", "-H", "32", "--steps", "2", "-o", out)
    assert Image.open(out).size == (32, 32)
    out = os.path.join(tiny, "ex_edit.png")
    example("edit_two_images.py", *folders, os.path.join(tiny, "a.png"), os.path.join(tiny, "b.png"), "-W", "32",
            "-H", "32", "--steps", "2", "-o", out)
    assert os.path.exists(out)
    text = example("xomni_chat.py", "--model", os.path.join(tiny, "x-omni"), os.path.join(tiny, "a.png"),
                   "--max-new-tokens", "4")
    assert "answer tokens" in text


def test_the_docs_example_runs_on_the_tiny_folders(tiny):
    """The README's and docs/python.md's ten lines, with the tiny folders, the CPU and small sizes."""
    import re
    import sys

    text = open(os.path.join(ROOT, "docs", "python.md")).read()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert re.search(r"```python\n(.*?)```", readme, re.S).group(1) == code, "README and docs/python.md differ"
    assert len(code.strip().splitlines()) <= 11, "the page promises a 10-line example"
    for real, mine in [("UniWorld-V1", "uniworld-v1"), ("FLUX.1-dev", "flux.1-dev"),
                       ("siglip2", "siglip2"), ("X-Omni-En", "x-omni")]:
        code = code.replace(f'"{real}"', repr(os.path.join(tiny, mine)))
    code = code.replace('device="cuda"', 'device="cpu"').replace("steps=28", "steps=2")
    code = re.sub(r"(width|height)=(1024|1152)", r"\1=64", code)
    with tempfile.TemporaryDirectory() as cwd:
        r = subprocess.run([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=child_env(), timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        assert sorted(f for f in os.listdir(cwd) if f.endswith(".png")) == ["cube.png", "lighthouse.png", "snow.png"]


def test_the_torch_pin_is_one_version():
    """pyproject.toml's torch pin, the engine's OMNIFLUX_TORCH_PIN, scripts/setup.sh and this torch agree."""
    import re

    pyproject = open(os.path.join(ROOT, "python", "pyproject.toml")).read()
    cmake = open(os.path.join(ROOT, "cmake", "OmnifluxTorch.cmake")).read()
    setup = open(os.path.join(ROOT, "scripts", "setup.sh")).read()
    pins = {re.search(r'"torch==([0-9.]+)"', pyproject).group(1),
            re.search(r'OMNIFLUX_TORCH_PIN "([0-9.]+)"', cmake).group(1),
            re.search(r"^torch_version=([0-9.]+)", setup, re.M).group(1),
            torch.__version__.split("+")[0], omniflux._omniflux.torch_version}
    assert len(pins) == 1, pins
    version = re.search(r'^version = "([0-9.]+)"', pyproject, re.M).group(1)
    assert version == omniflux.__version__


def test_the_stubs_match_the_compiled_module():
    """_omniflux.pyi and models.pyi name every class, method and function the module has, and no other."""
    import ast
    import inspect

    pkg = os.path.dirname(omniflux.__file__)
    for stub, mod in [("_omniflux.pyi", omniflux._omniflux), ("models.pyi", omniflux.models)]:
        tree = ast.parse(open(os.path.join(pkg, stub)).read())
        stubbed = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        runtime = {n for n, v in vars(mod).items() if (inspect.isclass(v) or callable(v)) and not n.startswith("__")
                   and not n.startswith("_time_")}
        if mod is omniflux.models:
            runtime = set(mod.__all__)
        assert set(stubbed) == runtime, (stub, set(stubbed) ^ runtime)
        for name, node in stubbed.items():
            if isinstance(node, ast.ClassDef):
                methods = {f.name for f in node.body if isinstance(f, ast.FunctionDef)} - {"__init__"}
                cls = getattr(mod, name)
                assert all(hasattr(cls, m) for m in methods), (name, methods)
                public = {m for m in vars(cls) if not m.startswith("_")}
                assert public <= methods | {f.target.id for f in node.body if isinstance(f, ast.AnnAssign)}, (name, public)
