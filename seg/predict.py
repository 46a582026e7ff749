"""Predict label masks with a checkpoint, at each input's own size.

    python -m seg.predict --checkpoint outputs/seg-train/best.pt photos/ extra.jpg --out preds/ [--tta]

Writes `<stem>.png` (palette PNG of class indices) and `<stem>_overlay.png` per input image, and
`classes-legend.png` / `classes-legend.json`: each class's colour and name.
Images of any size work: they are resized as the model's training data was (the config's resize
policy, else its `data.scale`), run whole or in Gaussian-blended tiles of the training crop by the
same rule as validation (`seg.sliding`), and the logits are resized back to the image's own size.
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
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF  # v2's uint8 resize, as seg.data and v2.Resize use

from seg.checkpoint import Checkpoint, load_checkpoint
from seg.data import IGNORE_INDEX, IMAGE_SUFFIXES, decode_image, scaled_size
from seg.model import UNet
from seg.runtime import resolve_device
from seg.sliding import Tiling, tiling_for
from seg.transforms import Normalize


class Predictor:
    """A loaded model plus its preprocessing; `predict(image)` gives a (H, W) uint8 label map.

    `max_side`: None runs each input whole or in tiles by the validation rule of the model's config
    (`seg.sliding`); a number runs inputs of more than max_side x max_side pixels in tiles of that side."""

    def __init__(self, ckpt: Checkpoint, device: str = "auto", tta: bool = False, max_side: int | None = None):
        self.ckpt = ckpt
        self.device = resolve_device(device)
        self.model: UNet = ckpt.build_model().to(self.device)
        self.norm = Normalize(ckpt.mean, ckpt.std).to(self.device)
        cfg = ckpt.config
        self.resize = cfg.transforms.resize
        self.scale = cfg.data.scale
        self.divisor = cfg.model.size_divisor
        self.tta = tta
        if max_side is None:
            self.tiling = tiling_for(cfg)
        else:  # tiles are a multiple of the divisor so no tile needs internal padding
            self.tiling = Tiling(max_side * max_side, max(self.divisor, (max_side // self.divisor) * self.divisor))

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) the model runs at for an HxW image: the resize policy, else the size scaled by data.scale
        (as the training images were at decode), else the image's own."""
        if self.resize is not None:
            return tuple(self.resize)
        if self.scale != 1.0:
            return scaled_size(h, w, self.scale)
        return h, w

    @classmethod
    def from_path(cls, path: str | Path, **kwargs) -> Predictor:
        return cls(load_checkpoint(path), **kwargs)

    @torch.no_grad()
    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> float logits (K, H, W) at the image's own (original) size."""
        h, w = image.shape[-2:]
        size = self.input_size(h, w)
        x = image.unsqueeze(0).to(self.device)  # uint8 (1, 3, H, W)
        if size != (h, w):  # the uint8 resize the training images had (data.scale at decode, or the resize policy)
            x = TF.resize(x, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        x = self.norm(x)  # float (1, 3, h', w')
        out = self._forward(x)  # (1, K, h', w')
        if self.tta:
            out = (out + self._forward(x.flip(-1)).flip(-1)) / 2
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out[0]

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(image).argmax(0).to(torch.uint8).cpu()  # (H, W)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-image forward, or Gaussian-blended overlapping tiles (seg.sliding), float logits."""
        return self.tiling.logits(self.model, x)


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
    p.add_argument("--max-side", type=int, help="run images of more than SIDE x SIDE pixels in SIDE-px tiles "
                   "(default: whole up to the model's train.eval_max_pixels, else tiles of its training crop)")
    args = p.parse_args(argv)
    predictor = Predictor.from_path(args.checkpoint, device=args.device, tta=args.tta, max_side=args.max_side)
    written = predict_files(predictor, iter_inputs(args.inputs), args.out)
    print(f"wrote {len(written)} label maps and overlays to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
