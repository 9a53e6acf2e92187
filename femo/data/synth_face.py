"""Drawn cartoon faces whose expression follows an emotion, for the synthetic dataset.

A face is a shaded ellipse head on a plain background with ears, hair (long or short, dark or
grey), optional headwear, white eyes with pupils, line brows, a nose line and a lip-coloured
mouth: the drawing mediapipe's FaceLandmarker detects and reads blendshapes from. Sizes are in
units of the frame side S; drawing happens at twice the output size and is box-filtered down.

An expression is a vector of :data:`PARAMS` offsets from the neutral face (:data:`APEX` holds
each emotion's apex at intensity 1); :func:`envelope` gives its onset-apex-offset dynamics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: Expression parameters: mouth corner lift, mouth width change, mouth opening, brow raise,
#: inner-brow raise (negative = knit/lowered), eye opening change, mouth asymmetry, nose wrinkle,
#: lip press.
PARAMS: tuple[str, ...] = ("curv", "width", "open", "brow", "inner", "eye", "tilt", "wrinkle", "press")
MOUTH_PARAMS: frozenset[str] = frozenset({"curv", "width", "open", "tilt", "press"})

#: Apex expression of each emotion at intensity 1 (offsets from neutral; missing = 0).
APEX: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"curv": 1.4, "width": 0.35, "open": 0.4, "eye": -0.3, "brow": 0.1},
    "sad": {"curv": -0.9, "width": -0.1, "brow": -0.15, "inner": 1.0, "eye": -0.35},
    "angry": {"curv": -0.2, "width": -0.3, "brow": -0.9, "inner": -1.0, "eye": -0.6, "press": 1.0},
    "surprise": {"open": 1.3, "width": -0.4, "brow": 1.2, "eye": 0.6},
    "disgust": {"curv": -0.5, "tilt": 0.9, "open": 0.2, "brow": -0.5, "inner": -0.4, "eye": -0.4,
                "wrinkle": 1.0},
    "fear": {"open": 0.55, "width": 0.3, "curv": -0.35, "brow": 0.8, "inner": 0.9, "eye": 0.45},
}


@dataclass(frozen=True)
class FaceStyle:
    """Everything about a clip's face that does not change from frame to frame.

    face_w, face_h: head half-width/half-height (units of S). eye_dx: eye offset from the
    midline (S). skin, hair, background: RGB. long_hair, wrinkles: bool. headwear: "none" |
    "band" | "hat". yaw: head turn (degrees, + = towards the image right).
    """

    face_w: float
    face_h: float
    eye_dx: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    long_hair: bool
    wrinkles: bool
    headwear: str
    yaw: float = 0.0


def expression(emotion: str, level: float, *, region: str = "full") -> dict[str, float]:
    """Parameter offsets of ``emotion`` at ``level`` (intensity x envelope, >= 0).

    region "mouth" keeps only the mouth parameters (brows, eyes and nose stay neutral).
    """
    if emotion not in APEX:
        raise ValueError(f"unknown emotion {emotion!r}; known: {sorted(APEX)}")
    if region not in ("full", "mouth"):
        raise ValueError(f"unknown expression region {region!r}; known: ['full', 'mouth']")
    apex = APEX[emotion]
    return {p: level * apex.get(p, 0.0) if (region == "full" or p in MOUTH_PARAMS) else 0.0 for p in PARAMS}


def envelope(t: np.ndarray, onset: float, apex_start: float, apex_end: float, offset: float) -> np.ndarray:
    """Onset-apex-offset dynamics: 0 before ``onset``, smooth rise to 1 at ``apex_start``, 1 until
    ``apex_end``, smooth fall to 0 at ``offset``. t and the breakpoints in seconds; returns t's shape."""
    def smooth(x):
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3 - 2 * x)

    rise = smooth((t - onset) / max(apex_start - onset, 1e-6))
    fall = 1.0 - smooth((t - apex_end) / max(offset - apex_end, 1e-6))
    return np.minimum(rise, fall)


class FaceRenderer:
    """Draws one clip's frames: the static layer (background, ears, hair, head) once, then the
    expression-dependent features per frame. Output frames are (S, S, 3) uint8 RGB."""

    def __init__(self, style: FaceStyle, size: int):
        self.style, self.size, self.k = style, size, 2 * size  # k: drawing scale in pixels
        self.cx, self.cy = 0.5, 0.53
        self.yaw = math.radians(style.yaw)
        self.background = Image.new("RGB", (self.k, self.k), style.background)
        self.static = self._static_layer()

    def px(self, u: float, v: float, depth: float = 0.6) -> tuple[float, float]:
        """Pixel position of a face point: u, v offsets from the head centre (S units); ``depth``
        sets how far the point swings sideways when the head turns."""
        x = self.cx + u * math.cos(self.yaw) + depth * self.style.face_w * math.sin(self.yaw)
        return x * self.k, (self.cy + v) * self.k

    def _box(self, u: float, v: float, ru: float, rv: float, depth: float = 0.6) -> list[float]:
        x, y = self.px(u, v, depth)
        ru = ru * math.cos(self.yaw) * self.k
        return [x - ru, y - rv * self.k, x + ru, y + rv * self.k]

    def _static_layer(self) -> Image.Image:
        s, k = self.style, self.k
        img = self.background.copy()
        draw = ImageDraw.Draw(img)
        a, b = s.face_w, s.face_h
        if s.long_hair:
            draw.ellipse(self._abs_box(0.0, -0.05, a * 1.22, b * 1.08), fill=s.hair)
        for side in (-1, 1):
            draw.ellipse(self._box(side * a * 0.98, -0.03, 0.035, 0.06, depth=0.0), fill=_shade(s.skin, 0.85))
        head = Image.new("L", (k, k), 0)
        ImageDraw.Draw(head).ellipse(self._abs_box(0.0, 0.0, a, b), fill=255)
        img.paste(_shaded(s.skin, k, self.cx, self.cy, a, b), (0, 0), head)
        cap = self._abs_box(0.0, -b * 0.55, a * 1.03, b * 0.5)
        draw.chord(cap, 180, 360, fill=s.hair)
        if s.headwear == "band":
            y0, y1 = (self.cy - b * 0.78) * k, (self.cy - b * 0.66) * k
            draw.rectangle([(self.cx - a) * k, y0, (self.cx + a) * k, y1], fill=(200, 40, 60))
        elif s.headwear == "hat":
            top, brim = (self.cy - b * 1.25) * k, (self.cy - b * 0.8) * k
            draw.rectangle([(self.cx - a * 0.85) * k, top, (self.cx + a * 0.85) * k, brim], fill=(40, 60, 120))
            draw.rectangle([(self.cx - a * 1.3) * k, brim - 0.02 * k, (self.cx + a * 1.3) * k, brim + 0.01 * k],
                           fill=(30, 45, 95))
        return img

    def _abs_box(self, u: float, v: float, ru: float, rv: float) -> list[float]:
        """Box of an ellipse that does not turn with the head (head, hair)."""
        k = self.k
        return [(self.cx + u - ru) * k, (self.cy + v - rv) * k, (self.cx + u + ru) * k, (self.cy + v + rv) * k]

    def frame(self, params: dict[str, float], *, occluder: str = "none", shift: tuple[int, int] = (0, 0)
              ) -> np.ndarray:
        """One frame with expression ``params`` (see :func:`expression`); occluder "none" | "mouth"
        | "eyes" draws an opaque hand-coloured block; shift: (dx, dy) head sway in output pixels."""
        img = self.static.copy()
        draw = ImageDraw.Draw(img)
        if self.style.wrinkles:
            self._wrinkles(draw)
        self._eyes(draw, params)
        self._brows(draw, params)
        self._nose(draw, params)
        self._mouth(draw, params)
        if occluder != "none":
            self._occluder(draw, occluder)
        out = np.asarray(img.reduce(2))
        if shift != (0, 0):
            out = np.roll(out, shift=(shift[1], shift[0]), axis=(0, 1))
        return out

    def blank(self) -> np.ndarray:
        """A frame with no face (background only), (S, S, 3) uint8."""
        return np.asarray(self.background.reduce(2))

    def _eyes(self, draw: ImageDraw.ImageDraw, p: dict[str, float]) -> None:
        s, k = self.style, self.k
        ry = 0.022 * max(0.15, 1.0 + p["eye"])
        lw = max(2, int(0.006 * k))
        for side in (-1, 1):
            box = self._box(side * s.eye_dx, -0.06, 0.042, ry)
            draw.ellipse(box, fill=(250, 250, 250), outline=(40, 30, 30), width=lw)
            x, y = self.px(side * s.eye_dx, -0.06)
            r = min(0.014, ry * 0.9) * k
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(35, 25, 20))
            draw.arc(box, 190, 350, fill=(30, 20, 20), width=lw * 2)

    def _brows(self, draw: ImageDraw.ImageDraw, p: dict[str, float]) -> None:
        s = self.style
        base = -0.06 - 0.055
        width = max(3, int(0.014 * self.k))
        for side in (-1, 1):
            inner = self.px(side * (s.eye_dx - 0.035), base - 0.03 * p["brow"] - 0.03 * p["inner"])
            mid = self.px(side * (s.eye_dx + 0.01), base - 0.008 - 0.03 * p["brow"] - 0.005 * p["inner"])
            outer = self.px(side * (s.eye_dx + 0.055), base + 0.005 - 0.03 * p["brow"] + 0.012 * p["inner"])
            draw.line([inner, mid, outer], fill=_shade(s.hair, 0.6), width=width, joint="curve")

    def _nose(self, draw: ImageDraw.ImageDraw, p: dict[str, float]) -> None:
        dark = _shade(self.style.skin, 0.55)
        lw = max(2, int(0.007 * self.k))
        draw.line([self.px(0.0, -0.04, 1.0), self.px(0.012, 0.07, 1.0), self.px(-0.02, 0.085, 1.0)],
                  fill=dark, width=lw, joint="curve")
        for side in (-1, 1):
            x, y = self.px(side * 0.022, 0.085, 0.95)
            r = 0.007 * self.k
            draw.ellipse([x - r, y - r * 0.6, x + r, y + r * 0.6], fill=dark)
        if p["wrinkle"] > 0.05:
            for dv in (0.0, 0.015):
                draw.line([self.px(-0.02, -0.01 + dv, 1.0), self.px(0.02, -0.01 + dv, 1.0)], fill=dark,
                          width=max(1, int(lw * p["wrinkle"])))

    def _mouth(self, draw: ImageDraw.ImageDraw, p: dict[str, float]) -> None:
        half = 0.075 * (1.0 + p["width"])
        lift, opening, tilt = 0.045 * p["curv"], 0.065 * max(0.0, p["open"]), 0.02 * p["tilt"]
        xs = np.linspace(-1.0, 1.0, 15)
        base = 0.19 - lift * xs ** 2 - tilt * np.maximum(xs, 0)  # corners up when lift > 0
        upper = base - opening * 0.35 * (1 - xs ** 2)
        lower = base + opening * 0.65 * (1 - xs ** 2)
        lip = (115, 25, 35)
        lw = max(3, int((0.012 + 0.008 * max(0.0, p["press"])) * self.k))
        top = [self.px(x * half, y, 0.8) for x, y in zip(xs, upper)]
        if opening > 0.004:
            bottom = [self.px(x * half, y, 0.8) for x, y in zip(xs[::-1], lower[::-1])]
            draw.polygon(top + bottom, fill=(70, 15, 25), outline=lip)
            if p["curv"] > 0.3:  # a smile shows the upper teeth
                teeth = [self.px(x * half * 0.8, y + 0.012, 0.8) for x, y in zip(xs[2:-2], upper[2:-2])]
                draw.line(teeth, fill=(240, 240, 235), width=max(2, int(0.012 * self.k)))
            draw.line(top, fill=lip, width=lw // 2 + 1, joint="curve")
            draw.line(bottom, fill=lip, width=lw // 2 + 1, joint="curve")
        else:
            draw.line(top, fill=lip, width=lw, joint="curve")

    def _wrinkles(self, draw: ImageDraw.ImageDraw) -> None:
        s = self.style
        dark = _shade(s.skin, 0.78)
        lw = max(1, int(0.004 * self.k))
        for v in (-0.2, -0.17):
            draw.line([self.px(-0.07, v, 0.9), self.px(0.0, v - 0.005, 0.9), self.px(0.07, v, 0.9)], fill=dark,
                      width=lw)
        for side in (-1, 1):
            x0 = side * (s.eye_dx + 0.05)
            for dv in (-0.012, 0.0, 0.012):
                draw.line([self.px(x0, -0.06 + dv * 0.5), self.px(x0 + side * 0.02, -0.06 + dv * 1.5)], fill=dark,
                          width=lw)
            draw.line([self.px(side * 0.05, 0.11, 0.8), self.px(side * 0.07, 0.17, 0.8)], fill=dark, width=lw)

    def _occluder(self, draw: ImageDraw.ImageDraw, region: str) -> None:
        s, k = self.style, self.k
        v0, v1 = (0.12, 0.28) if region == "mouth" else (-0.14, -0.02)
        x0, x1 = (self.cx - s.face_w * 0.85) * k, (self.cx + s.face_w * 0.85) * k
        y0, y1 = (self.cy + v0) * k, (self.cy + v1) * k
        draw.rounded_rectangle([x0, y0, x1, y1], radius=0.03 * k, fill=(205, 160, 130), outline=(150, 110, 90),
                               width=max(2, int(0.006 * k)))


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in rgb)


def _shaded(skin: tuple[int, int, int], k: int, cx: float, cy: float, a: float, b: float) -> Image.Image:
    """A (k, k) RGB image of the skin colour lit from the upper left (radial fall-off)."""
    y, x = np.mgrid[0:k, 0:k].astype(np.float32) / k
    r2 = ((x - cx + 0.3 * a) / a) ** 2 + ((y - cy + 0.3 * b) / b) ** 2
    light = np.clip(1.08 - 0.22 * r2, 0.6, 1.1)[..., None]  # (k, k, 1)
    rgb = np.clip(np.asarray(skin, np.float32) * light, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb)
