"""Images for ``captioner demo``: a directory's images, or sample photos from scikit-image.

Only photos bundled in the scikit-image wheel are used (never its on-demand downloads),
written as JPEG or PNG files so the stack sees ordinary uploads.
"""

from __future__ import annotations

from pathlib import Path

# (skimage.data function, the file it reads from the wheel, the file the demo uploads)
SAMPLES = (
    ("coffee", "coffee.png", "coffee.jpg"),
    ("chelsea", "chelsea.png", "chelsea.jpg"),
    ("astronaut", "astronaut.png", "astronaut.png"),
    ("rocket", "rocket.jpg", "rocket.jpg"),
    ("camera", "camera.png", "camera.png"),
)
IMAGE_SUFFIXES = frozenset(
    (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif")
)


def write_sample_photos(directory: Path) -> list[Path]:
    """Write the bundled sample photos into ``directory``; returns their paths."""
    import skimage.data
    from PIL import Image

    bundled = Path(skimage.data.__file__).parent
    paths = []
    for function, source, name in SAMPLES:
        if not (bundled / source).is_file():  # not in this wheel: it would be downloaded
            continue
        image = Image.fromarray(getattr(skimage.data, function)())
        path = directory / name
        if path.suffix == ".jpg":
            image.convert("RGB").save(path, "JPEG", quality=90)
        else:
            image.save(path, "PNG")
        paths.append(path)
    return paths


def find_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` (by extension; hidden files and folders skipped)."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
