"""``femo predict VIDEO --video-out annotated.mp4``: the video with the prediction drawn on it.

Each frame shows the face box of the window whose centre is nearest the frame's time (the
window's median box, :attr:`femo.inference.timeline.Timeline.face_box`), that window's label and
probability next to the box, and a bar per class in the top-left corner. The video is re-encoded
as H.264 (yuv420p, x264 ``veryfast``, crf 20) at its own frame rate; the original audio packets
are copied unchanged (no re-encoding). Decoding and encoding stream frame by frame, so memory
does not grow with the video's length.
"""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from femo.data.decode import MediaError
from femo.inference.outputs import OKABE_ITO
from femo.inference.timeline import Timeline

#: Bar panel geometry in pixels at a 360-pixel frame height (scaled with the frame).
BAR_WIDTH, BAR_HEIGHT, BAR_GAP = 120, 12, 4


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def draw(frame: np.ndarray, timeline: Timeline, j: int) -> np.ndarray:
    """Draw window ``j``'s box, label and class bars on ``frame`` (H, W, 3) uint8 RGB, in place; returns it."""
    h, w = frame.shape[:2]
    k = h / 360
    probs, label = timeline.probabilities[j], timeline.labels[j]
    colour = _rgb(OKABE_ITO[int(np.argmax(probs)) % len(OKABE_ITO)])
    box = timeline.face_box[j]
    if not np.isnan(box).any():
        x0, y0, x1, y1 = (box * [w, h, w, h]).round().astype(int)
        cv2.rectangle(frame, (x0, y0), (x1, y1), colour, max(1, round(2 * k)))
        text, scale, thick = f"{label} {probs.max():.2f}", 0.5 * k, max(1, round(k))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        y = max(th + base, y0 - round(4 * k))
        cv2.rectangle(frame, (x0, y - th - base), (x0 + tw, y + base // 2), (0, 0, 0), -1)  # legible on any background
        cv2.putText(frame, text, (x0, y - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    bw, bh, gap = round(BAR_WIDTH * k), round(BAR_HEIGHT * k), round(BAR_GAP * k)
    for c, (name, p) in enumerate(zip(timeline.classes, probs)):
        top = gap + c * (bh + gap)
        cv2.rectangle(frame, (gap, top), (gap + bw, top + bh), (40, 40, 40), -1)
        cv2.rectangle(frame, (gap, top), (gap + round(bw * float(p)), top + bh), _rgb(OKABE_ITO[c % len(OKABE_ITO)]), -1)
        cv2.putText(frame, name, (2 * gap + bw, top + bh - max(1, round(2 * k))), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * k, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def write_annotated(video: str | Path, timeline: Timeline, out: str | Path) -> Path:
    """Write ``out`` (.mp4): ``video`` with ``timeline`` drawn on every frame, audio copied."""
    video, out = Path(video), Path(out)
    centres = timeline.spans.mean(axis=1)  # (W,) seconds
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        src = av.open(str(video))
    except av.FFmpegError as exc:
        raise MediaError(f"{video}: cannot be opened ({exc})") from exc
    with src, av.open(str(out), mode="w", format="mp4") as dst:
        vin = src.streams.video[0]
        ain = src.streams.audio[0] if src.streams.audio else None
        vout = dst.add_stream("libx264", rate=vin.average_rate or 25)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width // 2 * 2, vin.codec_context.height // 2 * 2, "yuv420p"
        vout.codec_context.options = {"crf": "20", "preset": "veryfast"}
        aout = dst.add_stream_from_template(ain) if ain is not None else None
        start, count = vin.start_time or 0, 0
        try:
            for packet in src.demux(*(s for s in (vin, ain) if s is not None)):
                if packet.stream is ain:
                    if packet.dts is not None:
                        packet.stream = aout
                        dst.mux(packet)
                    continue
                for frame in packet.decode():
                    t = float(((frame.pts if frame.pts is not None else start) - start) * vin.time_base)
                    rgb = frame.to_ndarray(format="rgb24")[: vout.height, : vout.width]
                    drawn = av.VideoFrame.from_ndarray(draw(np.ascontiguousarray(rgb), timeline,
                                                            int(np.argmin(np.abs(centres - t)))), format="rgb24")
                    drawn.pts = count
                    count += 1
                    dst.mux(vout.encode(drawn))
        except av.FFmpegError as exc:
            raise MediaError(f"{video}: corrupt or truncated stream while annotating ({exc})") from exc
        dst.mux(vout.encode(None))
    return out
