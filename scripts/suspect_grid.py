"""The most suspect labels of a saved report (``fer_core.audit``) as one image grid, for docs/RESULTS.md.

    python scripts/suspect_grid.py [--report checkpoints/fer2013_effnet_b0.PrivateTest.json]
        [--data ../shared/data/fer2013] [--out docs/img/suspect_labels.png] [--count 32] [--columns 8]

Each tile is a face with its given label and the model's label and confidence under it, most suspect first
(reading order). Faces are read from the data set's class folders by the report's image ids.
"""
from __future__ import annotations

import argparse
import sys
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_core.audit import audit_report, read_report  # noqa: E402
from fer_core.data import find_fer2013  # noqa: E402
from fer_core.predict import ImageError, load_image  # noqa: E402
from fer_core.storage import atomic_write_bytes  # noqa: E402

TILE = 144          # face side in pixels (FER-2013's 48 scaled up 3x): room for "model: surprise 92%"
TEXT_ROWS = 2       # given label; model's label and confidence
ROW_HEIGHT = 16
FONT = cv2.FONT_HERSHEY_SIMPLEX


def face_from(data: Path, image_id: str) -> np.ndarray | None:
    """The grey face of a report's image id, or None when it is not a readable file inside ``data``."""
    path = (data / image_id).resolve()
    if not path.is_relative_to(data.resolve()) or not path.is_file():   # an id must not lead out of the data set
        return None
    try:
        return cv2.cvtColor(load_image(path), cv2.COLOR_RGB2GRAY)
    except ImageError:
        return None


def tile(face: np.ndarray, suspect: dict) -> np.ndarray:
    """A face scaled to ``TILE`` with its two caption lines under it. Grey, as the faces are: a third of the
    PNG's size in colour."""
    canvas = np.full((TILE + TEXT_ROWS * ROW_HEIGHT + 4, TILE), 255, np.uint8)
    canvas[:TILE] = cv2.resize(face, (TILE, TILE), interpolation=cv2.INTER_CUBIC)
    lines = [f"label: {suspect['given']}", f"model: {suspect['predicted']} {suspect['confidence']:.0%}"]
    for k, text in enumerate(lines):
        cv2.putText(canvas, text, (3, TILE + (k + 1) * ROW_HEIGHT - 2), FONT, 0.4, 0, 1, cv2.LINE_AA)
    return canvas


def grid(tiles: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tiles in rows of ``columns``, white gaps between them."""
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        out[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = t
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", default=str(ROOT / "checkpoints" / "fer2013_effnet_b0.PrivateTest.json"))
    p.add_argument("--data", help="the data set's folder (default: FER-2013 where found)")
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "suspect_labels.png"))
    p.add_argument("--count", type=int, default=32, help="faces in the grid (default 32)")
    p.add_argument("--columns", type=int, default=8)
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else find_fer2013()
    if data is None or not data.is_dir():
        sys.exit("error: the data set's folder is needed (--data)")
    audit = audit_report(read_report(args.report))
    readable = ((s, face) for s in audit["suspects"] if (face := face_from(data, s["id"])) is not None)
    found = list(islice(readable, args.count))
    if not found:
        sys.exit(f"error: none of the report's suspect images are files in {data}")
    ok, png = cv2.imencode(".png", grid([tile(face, s) for s, face in found], args.columns))
    if not ok:
        sys.exit("error: could not encode the grid")
    atomic_write_bytes(args.out, png.tobytes())
    print(f"{args.out}: the {len(found)} most suspect of {audit['num_flagged']:,} flagged labels "
          f"({audit.get('split')}, {audit['num_images']:,} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
