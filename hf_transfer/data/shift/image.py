"""Image conditions: pure functions of (uint8 tensor, channels x height x width; strength in (0, 1]; numpy Generator).

torchvision's v2 functional ops do what they have (brightness, gamma, contrast, JPEG, resize); what they lack is written
here: noise drawn from the numpy generator (torchvision's draws from torch's global one, which would make a row's
shift depend on everything run before it), shot noise, motion blur, colour cast, haze, and a separable Gaussian blur.
Spatial sizes (blur radius, streak length) scale with the image's shorter side, so a strength means the same on a
32-pixel thumbnail and on a photograph; `image_size` is what the image had when the size was computed.
"""
from __future__ import annotations

import math

import numpy as np

from hf_transfer.data.shift.transform import Transform, registry


def _to_float(image):
    return image.float() / 255.0


def _to_uint8(values):
    import torch

    return (values * 255.0).round().clamp(0, 255).to(torch.uint8)


def _short_side(image) -> int:
    return min(int(image.shape[-2]), int(image.shape[-1]))


def _random_normal(rng: np.random.Generator, shape):
    import torch

    return torch.from_numpy(rng.standard_normal(tuple(shape), dtype=np.float32))


# --- light and colour ---

def _low_light_values(strength: float) -> tuple[float, float]:
    return 1.0 - 0.85 * strength, 1.0 + 1.5 * strength  # brightness factor, gamma


def low_light(image, strength, rng):
    from torchvision.transforms.v2 import functional as F

    brightness, gamma = _low_light_values(strength)
    return F.adjust_brightness(F.adjust_gamma(image, gamma), brightness)


def contrast(image, strength, rng):
    from torchvision.transforms.v2 import functional as F

    return F.adjust_contrast(image, 1.0 - 0.8 * strength)


def colour_cast(image, strength, rng):
    import torch

    # A tint of a random hue: each channel's gain follows the hue's direction on the colour wheel.
    hue = rng.uniform(0.0, 2 * math.pi)
    gains = torch.tensor([1.0 + 0.4 * strength * math.cos(hue - 2 * math.pi * c / 3) for c in range(3)])
    if image.shape[-3] != 3:  # grayscale: a cast has no hue to take
        return image
    return _to_uint8(_to_float(image) * gains.view(3, 1, 1))


# --- noise ---

def gaussian_noise(image, strength, rng):
    return _to_uint8(_to_float(image) + 0.2 * strength * _random_normal(rng, image.shape))


def _photons(strength: float) -> float:
    return 10 ** (3.0 - 2.5 * strength)  # photons a white pixel collects: 1,000 (faint noise) down to about 3


def shot_noise(image, strength, rng):
    import torch

    peak = _photons(strength)
    counts = rng.poisson(np.asarray(_to_float(image)) * peak)
    return _to_uint8(torch.from_numpy((counts / peak).astype(np.float32)))


# --- blur and resolution ---

def _blur_sigma(strength: float, short_side: int) -> float:
    return 0.04 * strength * short_side


def gaussian_blur(image, strength, rng):
    import torch

    # Two 1-D passes (rows, then columns): torchvision's gaussian_blur convolves with the full 2-D kernel, 15x slower for
    # the radius a 224-pixel image gets at strength 1 (the result is the same Gaussian, to float rounding).
    sigma = _blur_sigma(strength, _short_side(image))
    if sigma < 0.05:
        return image
    half = math.ceil(3 * sigma)
    offsets = torch.arange(-half, half + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    channels = image.shape[-3]
    mode = "reflect" if half < _short_side(image) else "replicate"
    values = torch.nn.functional.pad(_to_float(image).unsqueeze(0), [half, half, half, half], mode=mode)
    values = torch.nn.functional.conv2d(values, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    values = torch.nn.functional.conv2d(values, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return _to_uint8(values[0])


def _streak_length(strength: float, short_side: int) -> float:
    return 0.08 * strength * short_side


def motion_blur(image, strength, rng):
    import torch

    length = _streak_length(strength, _short_side(image))
    if length < 1.0:
        return image
    angle = rng.uniform(0.0, math.pi)
    # The kernel: a line of `length` pixels through the centre, drawn with bilinear weights at sub-pixel steps.
    half = math.ceil(length / 2)
    size = 2 * half + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    for t in np.linspace(-length / 2, length / 2, max(2, int(length * 4))):
        x, y = half + t * math.cos(angle), half + t * math.sin(angle)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                kernel[y0 + dy, x0 + dx] += (1 - abs(x - x0 - dx)) * (1 - abs(y - y0 - dy))
    kernel /= kernel.sum()
    channels = image.shape[-3]
    weight = torch.from_numpy(kernel).expand(channels, 1, size, size)
    mode = "reflect" if half < _short_side(image) else "replicate"
    padded = torch.nn.functional.pad(_to_float(image).unsqueeze(0), [half] * 4, mode=mode)
    return _to_uint8(torch.nn.functional.conv2d(padded, weight, groups=channels)[0])


def _jpeg_quality(strength: float) -> int:
    return round(95 - 85 * strength)


def jpeg(image, strength, rng):
    from torchvision.transforms.v2 import functional as F

    return F.jpeg(image, _jpeg_quality(strength))


def _downscale_factor(strength: float) -> float:
    return 1.0 + 7.0 * strength


def low_resolution(image, strength, rng):
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    height, width = int(image.shape[-2]), int(image.shape[-1])
    factor = _downscale_factor(strength)
    small = [max(1, round(height / factor)), max(1, round(width / factor))]
    down = F.resize(image, small, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.resize(down, [height, width], interpolation=InterpolationMode.BILINEAR, antialias=False)


# --- weather ---

def fog(image, strength, rng):
    import torch

    # The haze model I = J t + A (1 - t): transmission t falls with the fog's density, which varies in soft patches
    # (a 4 x 4 random field, upsampled) around its mean; A is the airlight, a bright grey.
    height, width = int(image.shape[-2]), int(image.shape[-1])
    field = torch.from_numpy(rng.uniform(0.7, 1.0, (1, 1, 4, 4)).astype(np.float32))
    density = torch.nn.functional.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)[0]
    transmission = (1.0 - 0.75 * strength * density).clamp(0.0, 1.0)
    airlight = float(rng.uniform(0.8, 0.95))
    return _to_uint8(_to_float(image) * transmission + airlight * (1.0 - transmission))


def _pixels(strength: float, share: float) -> str:
    fraction = share * strength
    return f"{fraction * 100:.1f}% of the shorter side ({fraction * 32:.1f} px at 32, {fraction * 224:.1f} at 224)"


TRANSFORMS = registry(
    Transform("low_light", "image", low_light,
              lambda s: "brightness x{:.2f}, gamma {:.2f}".format(*_low_light_values(s)),
              "darker and crushed shadows: gamma, then brightness"),
    Transform("contrast", "image", contrast, lambda s: f"contrast x{1 - 0.8 * s:.2f}", "flatter contrast (toward the mean grey)"),
    Transform("colour_cast", "image", colour_cast, lambda s: f"channel gains 1 +/- {0.4 * s:.2f}, random hue",
              "a colour tint (street lamps, twilight, water) of a random hue"),
    Transform("gaussian_noise", "image", gaussian_noise, lambda s: f"sigma {0.2 * s * 255:.0f}/255",
              "sensor read noise: Gaussian, the same everywhere"),
    Transform("shot_noise", "image", shot_noise, lambda s: f"{_photons(s):.0f} photons at white",
              "photon noise: Poisson, stronger in bright areas, grows as light falls"),
    Transform("gaussian_blur", "image", gaussian_blur, lambda s: "sigma " + _pixels(s, 0.04), "out of focus"),
    Transform("motion_blur", "image", motion_blur, lambda s: "streak " + _pixels(s, 0.08) + ", random angle",
              "camera or subject motion: a straight streak"),
    Transform("jpeg", "image", jpeg, lambda s: f"quality {_jpeg_quality(s)}", "JPEG compression artefacts"),
    Transform("low_resolution", "image", low_resolution, lambda s: f"downscaled {_downscale_factor(s):.1f}x, then back",
              "a low-resolution camera: downscale, then upscale to the original size"),
    Transform("fog", "image", fog, lambda s: f"transmission {1 - 0.75 * s:.2f}-{1 - 0.525 * s:.2f} in soft patches",
              "haze: the scene fades toward a bright grey airlight"),
)


def to_tensor(image):
    """A PIL image (or a uint8 tensor) as a uint8 tensor, channels first, and a function that turns the result back."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    if isinstance(image, Image.Image):
        return F.pil_to_tensor(image), F.to_pil_image
    return image, lambda x: x
