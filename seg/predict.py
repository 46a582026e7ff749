"""Predict label masks with a checkpoint, at each input's own size.

    python -m seg.predict --checkpoint outputs/seg-train/best.pt photos/ extra.jpg --out preds/ [--tta]

Writes `<stem>.png` (palette PNG of class indices) and `<stem>_overlay.png` per input image, and
`classes-legend.png` / `classes-legend.json`: each class's colour and name.
Images of any size work: they are resized by the config's resize policy (if any), padded to a
multiple of 2**(depth-1), and tiled with a sliding window when a side exceeds `--max-side`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from seg.checkpoint import Checkpoint, load_checkpoint
from seg.data import IGNORE_INDEX, IMAGE_SUFFIXES, decode_image
from seg.model import UNet
from seg.runtime import resolve_device
from seg.transforms import Normalize

DEFAULT_MAX_SIDE = 1024


class Predictor:
    """A loaded model plus its preprocessing; `predict(image)` gives a (H, W) uint8 label map."""

    def __init__(self, ckpt: Checkpoint, device: str = "auto", tta: bool = False, max_side: int = DEFAULT_MAX_SIDE):
        self.ckpt = ckpt
        self.device = resolve_device(device)
        self.model: UNet = ckpt.build_model().to(self.device)
        self.norm = Normalize(ckpt.mean, ckpt.std).to(self.device)
        self.resize = ckpt.config.transforms.resize
        self.divisor = ckpt.config.model.size_divisor
        self.tta = tta
        # Tiles are a multiple of the divisor so no tile needs internal padding.
        self.tile = max(self.divisor, (max_side // self.divisor) * self.divisor)

    @classmethod
    def from_path(cls, path: str | Path, **kwargs) -> Predictor:
        return cls(load_checkpoint(path), **kwargs)

    @torch.no_grad()
    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float logits (K, H, W) at the image's own size."""
        h, w = image.shape[-2:]
        x = self.norm(image.unsqueeze(0).to(self.device))  # (1, 3, H, W)
        if self.resize is not None:
            x = F.interpolate(x, size=tuple(self.resize), mode="bilinear", align_corners=False, antialias=True)
        out = self._tiled(x)
        if self.tta:
            out = (out + self._tiled(x.flip(-1)).flip(-1)) / 2
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out[0]

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).argmax(0).to(torch.uint8).cpu()  # (H, W)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-image forward, or an overlapping sliding window with averaged logits."""
        _, _, h, w = x.shape
        if max(h, w) <= self.tile:
            return self.model(x).float()
        tile, stride = self.tile, self.tile // 2
        out = torch.zeros((1, self.ckpt.config.model.num_classes, h, w), device=x.device)
        hits = torch.zeros((1, 1, h, w), device=x.device)
        for top in _starts(h, tile, stride):
            for left in _starts(w, tile, stride):
                patch = x[..., top: top + tile, left: left + tile]
                out[..., top: top + tile, left: left + tile] += self.model(patch).float()
                hits[..., top: top + tile, left: left + tile] += 1
        return out / hits


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def palette(num_classes: int) -> list[int]:
    """The PASCAL VOC bit-interleaved palette (class 0 black, distinct colours), 255 (ignore) white."""
    colours = np.zeros((256, 3), dtype=np.int64)
    for index in range(256):
        c = index
        for bit in range(8):
            for channel in range(3):
                colours[index, channel] |= ((c >> channel) & 1) << (7 - bit)
            c >>= 3
    colours[IGNORE_INDEX] = 255  # white
    return [int(v) for v in colours.reshape(-1)]


def label_image(label: torch.Tensor, num_classes: int) -> Image.Image:
    img = Image.fromarray(label.numpy())  # "L"; putpalette turns it into "P"
    img.putpalette(palette(num_classes))
    return img


LEGEND = "classes-legend"  # LEGEND.png and LEGEND.json beside the predictions


def write_legend(out: Path, names: Sequence[str]) -> Path:
    """LEGEND.png (a colour swatch beside each class's index and name) and LEGEND.json; returns the PNG."""
    colours = np.asarray(palette(len(names))).reshape(256, 3)
    entries = [{"index": i, "name": name, "rgb": [int(c) for c in colours[i]]} for i, name in enumerate(names)]
    ignore = {"index": IGNORE_INDEX, "name": "ignore", "rgb": [int(c) for c in colours[IGNORE_INDEX]]}
    (out / f"{LEGEND}.json").write_text(json.dumps({"classes": entries, "ignore": ignore}, indent=2))
    row = 18
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = 40 + int(max(measure.textlength(f"{e['index']}  {e['name']}") for e in entries))
    legend = Image.new("RGB", (width, row * len(entries) + 6), "white")
    draw = ImageDraw.Draw(legend)
    for i, entry in enumerate(entries):
        top = 3 + i * row
        draw.rectangle([4, top, 18, top + 14], fill=tuple(entry["rgb"]), outline=(0, 0, 0))
        draw.text((26, top + 2), f"{entry['index']}  {entry['name']}", fill=(0, 0, 0))
    legend.save(out / f"{LEGEND}.png")
    return out / f"{LEGEND}.png"


def overlay_image(image: torch.Tensor, label: torch.Tensor, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """Blend the coloured mask over the RGB image (uint8 (3, H, W))."""
    rgb = Image.fromarray(image.permute(1, 2, 0).numpy())
    colour = label_image(label, num_classes).convert("RGB")
    return Image.blend(rgb, colour, alpha)


def iter_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively) in named folders, sorted."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input {item} is neither an image file nor a folder")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {[str(i) for i in inputs]}")
    return files


def predict_files(predictor: Predictor, files: list[Path], out: Path) -> list[Path]:
    """Writes `<stem>.png` and `<stem>_overlay.png` for each file, and the legend; returns the label paths."""
    stems = [p.stem for p in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1 or s == LEGEND})
    if clashes:
        raise ValueError(f"inputs share the stem(s) {clashes} (e.g. a.jpg and a.png, or {LEGEND!r}, the legend's "
                         "name); their outputs would overwrite each other; rename or predict them separately")
    out.mkdir(parents=True, exist_ok=True)
    k = predictor.ckpt.config.model.num_classes
    write_legend(out, predictor.ckpt.class_names)
    written = []
    for path in files:
        image = decode_image(path)
        label = predictor.predict(image)
        target = out / f"{path.stem}.png"
        label_image(label, k).save(target)
        overlay_image(image, label, k).save(out / f"{path.stem}_overlay.png")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seg.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint written by seg.train or search")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="tile images larger than this")
    args = p.parse_args(argv)
    predictor = Predictor.from_path(args.checkpoint, device=args.device, tta=args.tta, max_side=args.max_side)
    written = predict_files(predictor, iter_inputs(args.inputs), args.out)
    print(f"wrote {len(written)} label maps and overlays to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
