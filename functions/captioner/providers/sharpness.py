"""How sharp a photo is: the variance of its Laplacian (a classic focus measure).

A sharp photo has strong, fine edges, so its second derivative varies a lot; blur removes
them. The image is first scaled so its longer side is ``SIDE`` pixels, so that the measure
does not depend on resolution (the same photo at 12 MP and 0.3 MP scores alike).
"""

from __future__ import annotations

from PIL import Image

#: Longer side, in pixels, at which sharpness is measured.
SIDE = 512
#: Below this standard deviation of grey levels (0-255) the image is blank, not blurred.
FLAT_STD = 2.0


def sharpness(image: Image.Image) -> float | None:
    """Variance of the 4-neighbour Laplacian of the grey image; None when there is nothing
    to judge (an image under 3 pixels a side, or one flat colour)."""
    import numpy as np  # lazy, see sessions.py

    grey = image.convert("L")
    scale = SIDE / max(grey.size)
    if scale < 1:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    pixels = np.asarray(grey, dtype=np.float32)
    if min(pixels.shape) < 3 or pixels.std() < FLAT_STD:
        return None
    laplacian = (
        pixels[1:-1, :-2] + pixels[1:-1, 2:] + pixels[:-2, 1:-1] + pixels[2:, 1:-1]
    ) - 4 * pixels[1:-1, 1:-1]
    return round(float(laplacian.var()), 2)
