"""FER-2013 and other class-folder data sets, held in memory as one uint8 tensor.

Two published forms of FER-2013 are read:

* the challenge's ``fer2013.csv`` (``emotion,pixels,Usage``; 2,304 grey values a row);
* the class-folder layout ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, whose test files
  carry ``PublicTest_``/``PrivateTest_`` prefixes.

Any other folder of images whose sub-folders are named after (a subset of) the seven classes is
read too: images of any size and colour are converted to grey and resized (``fer_core.imaging``). Decoded
arrays are cached on disk, keyed on the source's file listing, so a second load takes well under a second.

Public: ``load_dataset``, ``summarize_dataset``, ``check_data_source`` (is a path a data set, cheaply: the
check every loader makes first), ``find_fer2013``, ``parse_class_list``, ``normalise_class_name`` and the
classes ``FerDataset``, ``FerSplit``, ``DatasetSummary`` and ``DataError``.

Errors name the file (and line) and say what was expected; they never quote the file's content, which may
be anything a user pointed the data path at.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .imaging import resize_square

if TYPE_CHECKING:   # PyTorch is imported where tensors are made: counting images needs none
    import torch

log = logging.getLogger(__name__)

FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
GENERIC_SPLITS: tuple[str, ...] = ("Training", "Validation", "Test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm"}
CLASS_ALIASES = {
    "anger": "angry", "disgusted": "disgust", "fearful": "fear", "happiness": "happy",
    "sadness": "sad", "surprised": "surprise", "neutrality": "neutral",
}
_CACHE_FORMAT = 1
# Images a decoding task: one task an image cost more in thread hand-offs than the decoding (45 us an image);
# 512 an image keeps the threads busy and reports progress about 70 times over FER-2013 (bench/data_load.py).
DECODE_CHUNK = 512
CSV_PROGRESS_ROWS = 1024   # a CSV reports its progress every this many rows
CSV_HEADER_BYTES = 4096   # how much of a CSV the check reads: its header is one short line
EXPECTED_SOURCE = ("expected a folder of class folders (train/<class>/ and test/<class>/, or <class>/ directly), "
                   "a folder holding fer2013.csv, or a .csv file whose first line is emotion,pixels[,Usage]")


class DataError(ValueError):
    """A data set that cannot be read; the message names the file and row or path."""


# ``progress(done, total)``: images decoded so far and in all (a CSV's total is estimated from its size)
Progress = Callable[[int, int], None]


@dataclass
class FerSplit:
    """One split: ``images`` (N, H, W) uint8, ``labels`` (N,) int64, and an id per image."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(np.asarray(self.labels), minlength=num_classes).tolist()


@dataclass
class FerDataset:
    """Splits of a data set with their class names.

    ``validation_split`` is the split used for model selection (``PublicTest`` for FER-2013) and
    ``test_splits`` the split(s) reported once at the end.
    """

    class_names: tuple[str, ...]
    splits: dict[str, FerSplit]
    source: str
    validation_split: str
    test_splits: tuple[str, ...]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> FerSplit:
        """A split by name; ``test`` joins every test split (both of FER-2013's)."""
        if name in self.splits:
            return self.splits[name]
        lowered = {k.lower(): k for k in self.splits}
        if name.lower() == "test":
            import torch

            parts = [self.splits[s] for s in self.test_splits]
            return FerSplit(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                            [i for p in parts for i in p.ids])
        if name.lower() in lowered:
            return self.splits[lowered[name.lower()]]
        raise DataError(f"unknown split {name!r}; this data set has {', '.join(self.splits)} and 'test'")

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        return {s: dict(zip(self.class_names, sp.class_counts(self.num_classes))) for s, sp in self.splits.items()}

    def summary(self) -> DatasetSummary:
        return DatasetSummary(self.class_names, self.counts(), self.source, self.validation_split, self.test_splits)

    def subset(self, classes: list[str] | tuple[str, ...]) -> FerDataset:
        """Keep only ``classes`` (in that order), relabelled 0..len(classes)-1."""
        classes = tuple(normalise_class_name(c) for c in classes)
        missing = [c for c in classes if c not in self.class_names]
        if missing:
            raise DataError(f"classes {missing} are not in this data set ({', '.join(self.class_names)})")
        if len(set(classes)) != len(classes):
            raise DataError(f"class list has duplicates: {', '.join(classes)}")
        import torch

        old_to_new = torch.full((self.num_classes,), -1, dtype=torch.long)
        for new, name in enumerate(classes):
            old_to_new[self.class_names.index(name)] = new
        splits = {}
        for name, sp in self.splits.items():
            mapped = old_to_new[sp.labels]
            keep = mapped >= 0
            idx = keep.nonzero().flatten()
            splits[name] = FerSplit(sp.images[idx], mapped[idx], [sp.ids[i] for i in idx.tolist()])
        return FerDataset(classes, splits, self.source, self.validation_split, self.test_splits,
                          list(self.skipped), list(self.warnings))


@dataclass
class DatasetSummary:
    """What a data set holds, without its images: class names, images per split and class, and which
    splits select models and which test them. See :func:`summarize_dataset`."""

    class_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    source: str
    validation_split: str
    test_splits: tuple[str, ...]

    def num_images(self, split: str, classes: list[str] | tuple[str, ...] | None = None) -> int:
        """Images of ``classes`` (default: all) in ``split``; ``test`` joins the test splits."""
        splits = self.test_splits if split.lower() == "test" and split not in self.counts else (split,)
        unknown = [s for s in splits if s not in self.counts]
        if unknown:
            raise DataError(f"unknown split {unknown[0]!r}; this data set has {', '.join(self.counts)} and 'test'")
        return sum(n for s in splits for c, n in self.counts[s].items() if classes is None or c in classes)


def normalise_class_name(name: str) -> str:
    key = name.strip().lower()
    return CLASS_ALIASES.get(key, key)


def parse_class_list(text: str | None) -> list[str] | None:
    """``"angry,disgust,fear,happy"`` -> list; None or empty -> None (all classes)."""
    if not text:
        return None
    names = [normalise_class_name(c) for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in FER2013_CLASSES]
    if unknown:
        raise DataError(f"unknown class(es) {unknown}; known: {', '.join(FER2013_CLASSES)}")
    return names


def default_cache_dir() -> Path:
    return Path(os.environ.get("FER_STUDIO_CACHE", Path.home() / ".cache" / "fer_studio"))


def find_fer2013(candidates: list[str | Path] | None = None) -> Path | None:
    """Where FER-2013 is: ``$FER2013_PATH`` when set (and only there), else the first of
    ``candidates``, ``data/fer2013``, ``data/fer2013.csv`` and ``../shared/data/fer2013``; each must pass
    :func:`check_data_source`."""
    def usable(p: Path) -> bool:
        try:
            _locate(p)
        except DataError:
            return False
        return True

    if os.environ.get("FER2013_PATH"):
        p = Path(os.environ["FER2013_PATH"]).expanduser()
        return p if usable(p) else None
    here = Path(__file__).resolve().parent.parent
    paths = [Path(p) for p in candidates or []]
    paths += [here / "data" / "fer2013", here / "data" / "fer2013.csv", here.parent / "shared" / "data" / "fer2013"]
    return next((p for p in paths if usable(p)), None)


def check_data_source(path: str | Path) -> Path:
    """``path`` resolved, as the loaders read it (a folder's ``fer2013.csv``), when it is a data set: a folder
    with class folders (``train/<class>/``... or ``<class>/`` directly) holding an image, a folder holding
    ``fer2013.csv``, or a ``.csv`` file whose first line is the challenge's header (emotion,pixels[,Usage]).
    Else ``DataError`` naming the path and what was expected.

    Cheap, for a form to call before any work starts: no image is decoded, a CSV is read up to its first
    line (at most ``CSV_HEADER_BYTES``) and a folder only until a first class folder with an image."""
    return _locate(Path(path).expanduser()).resolve()


def _locate(path: Path) -> Path:
    """The data file or folder at ``path`` (unresolved, as the user named it); see :func:`check_data_source`."""
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_dir() and (path / "fer2013.csv").is_file() and not (path / "train").is_dir():
        path = path / "fer2013.csv"
    if path.is_dir():
        if not _has_class_images(path):
            raise DataError(f"{path}: no class folders named after {', '.join(FER2013_CLASSES)} with images found "
                            f"({EXPECTED_SOURCE})")
    elif path.suffix.lower() != ".csv":
        raise DataError(f"{path} is not a data set ({EXPECTED_SOURCE})")
    else:
        _csv_columns(path, _first_line(path))
    return path


def _first_line(path: Path) -> list[str]:
    """The CSV's first row, from at most ``CSV_HEADER_BYTES`` of the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(CSV_HEADER_BYTES)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from None
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) == CSV_HEADER_BYTES:   # a first line this long is no header
        return []
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} line 1: not UTF-8 text; expected the header emotion,pixels[,Usage]") from None
    return next(csv.reader([text.rstrip("\r")]), [])


def _csv_columns(path: Path, header: list[str]) -> tuple[int, int, int | None]:
    """Positions of the emotion, pixels and (None without) Usage columns of a CSV with first row ``header``."""
    names = [h.strip().lower() for h in header]
    if "emotion" not in names or "pixels" not in names:
        raise DataError(f"{path} line 1: not a FER-2013 CSV; expected a header naming the columns "
                        "emotion,pixels[,Usage]")
    return names.index("emotion"), names.index("pixels"), names.index("usage") if "usage" in names else None


def _has_class_images(root: Path) -> bool:
    """Whether a class folder under ``root`` (as ``_list_class_folders`` finds them) holds an image file; stops
    at the first, so that a check does not list 35,887 files."""
    for class_dir in _class_folders(root):
        with os.scandir(class_dir) as entries:
            if any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in entries):
                return True
    return False


def load_dataset(path: str | Path, classes: list[str] | None = None, img_size: int = 48,
                 cache_dir: str | Path | None = None, use_cache: bool = True,
                 val_fraction: float = 0.1, seed: int = 0, pixels: bool = True,
                 progress: Progress | None = None) -> FerDataset:
    """Load a data set from ``path`` (a FER-2013 CSV, or a folder), optionally a class subset.

    Images are resized to ``img_size`` square grey images. Where the source has no validation
    split, a stratified, seeded ``val_fraction`` of the training images becomes one.

    ``pixels=False`` reads only the labels, ids and splits when the data set is cached, and returns no
    images either way (they are empty, (N, 0, 0)): enough for counts and split lists, in a fraction of
    the time and memory.

    ``progress(done, total)`` is called from the calling thread as images are decoded (not at all when the
    data set is read from the cache), so a page or a CLI can draw a progress bar.
    """
    path, key, reader = _source(path, img_size, progress)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    raw = _cache_read(cache / key, with_images=pixels) if use_cache else None
    if raw is None:
        raw = reader()
        if use_cache:
            _cache_write(cache / key, raw)
    if not pixels:   # also after a first read, which had to decode them: the caller asked for none
        raw["images"] = np.empty((len(raw["labels"]), 0, 0), np.uint8)
    dataset = _assemble(raw, str(path), val_fraction, seed)
    for w in dataset.warnings:
        log.warning(w)
    if dataset.skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s: %s", len(dataset.skipped), *dataset.skipped[0])
    return dataset.subset(classes) if classes else dataset


def summarize_dataset(path: str | Path, img_size: int = 48, cache_dir: str | Path | None = None,
                      val_fraction: float = 0.1, seed: int = 0, progress: Progress | None = None) -> DatasetSummary:
    """``load_dataset(...).summary()`` (same arguments), but from the cache it reads the labels only and
    needs no PyTorch; an uncached data set is decoded (``progress`` as in :func:`load_dataset`) and cached
    first."""
    path, key, reader = _source(path, img_size, progress)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    raw = _cache_read(cache / key, with_images=False)
    if raw is None:   # decode and cache the images (the next load needs them), count from the labels
        raw = reader()
        _cache_write(cache / key, raw)
    index, val_name, test_names, _ = _split_index(raw, val_fraction, seed)
    names, labels = tuple(raw["class_names"]), raw["labels"]
    counts = {s: dict(zip(names, np.bincount(labels[ix], minlength=len(names)).tolist())) for s, ix in index.items()}
    return DatasetSummary(names, counts, str(path), val_name, test_names)


def _source(path: str | Path, img_size: int,
            progress: Progress | None = None) -> tuple[Path, str, Callable[[], dict]]:
    """The data file or folder, its cache key (which changes when any of its files does) and its reader."""
    path = _locate(Path(path).expanduser())
    if path.is_file():
        key_parts = [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns]
        reader = lambda: _read_csv(path, img_size, progress)  # noqa: E731
    else:
        files = _list_class_folders(path)
        prefix = len(os.path.join(str(path), ""))   # the listed paths start with the folder's
        key_parts = [str(path.resolve()), [(f[prefix:], s, m) for f, s, m in files]]
        reader = lambda: _read_folders(path, [Path(f) for f, _, _ in files], img_size, progress)  # noqa: E731
    key = hashlib.sha1(json.dumps([_CACHE_FORMAT, img_size, key_parts]).encode()).hexdigest()[:20]
    return path, key, reader


# --- readers: each returns a dict of numpy arrays and lists (the cached form) -------------------

def _read_csv(path: Path, img_size: int, progress: Progress | None = None) -> dict:
    images, labels, usages, ids = [], [], [], []
    size, read = max(path.stat().st_size, 1), 0   # the total number of rows is estimated from the bytes read
    with open(path, newline="", encoding="utf-8-sig") as f:   # -sig: a byte-order mark is not a column name
        reader = csv.reader(f)
        try:
            header = next(reader, [])
            columns = _csv_columns(path, header)
            for line_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                img, label, usage = _parse_row(row, columns, len(header), f"{path.name} line {line_no}")
                images.append(resize_square(img, img_size))
                labels.append(label)
                usages.append(usage)
                ids.append(f"{usage}_{line_no - 2}")
                read += sum(map(len, row)) + len(row)
                if progress is not None and len(images) % CSV_PROGRESS_ROWS == 0:
                    progress(len(images), max(len(images), round(len(images) * size / read)))
        except UnicodeDecodeError:
            raise DataError(f"{path}: bytes that are not UTF-8 text after line {reader.line_num}") from None
        except csv.Error as e:   # its messages name the problem (a NUL byte, an overlong field), not the content
            raise DataError(f"{path} line {reader.line_num}: not a CSV row ({e})") from None
    if not images:
        raise DataError(f"{path}: no data rows")
    if progress is not None:
        progress(len(images), len(images))
    return {"images": np.stack(images), "labels": np.array(labels, np.int64), "splits": usages, "ids": ids,
            "class_names": list(FER2013_CLASSES), "skipped": [], "warnings": [], "layout": "fer2013"}


def _parse_row(row: list[str], columns: tuple[int, int, int | None], width: int,
               where: str) -> tuple[np.ndarray, int, str]:
    """A row's 48x48 image, label and split. Messages say what is wrong without quoting the cell."""
    col_e, col_p, col_u = columns
    n_pixels = 48 * 48
    if len(row) < width:
        raise DataError(f"{where}: expected {width} columns, found {len(row)}")
    try:
        label = int(row[col_e])
    except ValueError:
        raise DataError(f"{where}: the emotion is not an integer label (expected 0-6)") from None
    if not 0 <= label < len(FER2013_CLASSES):
        raise DataError(f"{where}: unknown emotion label {label} (expected 0-6)")
    try:
        pixels = np.array(row[col_p].split(), dtype=np.int32)
    except (ValueError, OverflowError):
        raise DataError(f"{where}: pixels contain a non-numeric value") from None
    if pixels.size != n_pixels:
        raise DataError(f"{where}: expected {n_pixels} pixel values, found {pixels.size}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{where}: pixel values must lie in 0-255")
    usage = row[col_u].strip() if col_u is not None else "Training"
    if usage not in FER2013_SPLITS:
        raise DataError(f"{where}: unknown Usage (expected {', '.join(FER2013_SPLITS)})")
    return pixels.astype(np.uint8).reshape(48, 48), label, usage


def _list_class_folders(root: Path) -> list[tuple[str, int, int]]:
    """Image files under ``root`` (``train``/``test``/... sub-folders or class folders directly): path,
    size and modification time. Plain strings: listing FER-2013's 35,887 files is on every page's path."""
    files = []
    for class_dir in _class_folders(root):
        for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                st = entry.stat()
                files.append((entry.path, st.st_size, st.st_mtime_ns))
    return files


def _split_dirs(root: Path) -> list[Path]:
    """``root``'s split folders (train/, test/, val/...); none when its class folders stand directly in it."""
    return [d for d in sorted(root.iterdir()) if d.is_dir() and _split_of_dir(d.name)]


def _class_folders(root: Path) -> list[Path]:
    """The folders named after a class (or an alias) in ``root``'s split folders, else in ``root``."""
    return [c for d in (_split_dirs(root) or [root]) for c in sorted(d.iterdir())
            if c.is_dir() and normalise_class_name(c.name) in FER2013_CLASSES]


def _split_of_dir(name: str) -> str | None:
    return {"train": "Training", "training": "Training", "val": "Validation", "valid": "Validation",
            "validation": "Validation", "test": "Test", "testing": "Test"}.get(name.lower())


def _decode_all(files: list[Path], img_size: int, progress: Progress | None) -> list[tuple[np.ndarray | None, str]]:
    """``_decode`` of every file, in order: chunks of ``DECODE_CHUNK`` files in threads (OpenCV releases the
    interpreter while it reads and decodes; more threads than cores overlap a cold disk's reads), reporting
    progress from the calling thread after each chunk."""
    chunks = [files[i:i + DECODE_CHUNK] for i in range(0, len(files), DECODE_CHUNK)]
    decoded: list[tuple[np.ndarray | None, str]] = []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for part in pool.map(lambda chunk: [_decode(f, img_size) for f in chunk], chunks):
            decoded += part
            if progress is not None:
                progress(len(decoded), len(files))
    return decoded


def _read_folders(root: Path, files: list[Path], img_size: int, progress: Progress | None = None) -> dict:
    split_dirs = _split_dirs(root)
    class_dirs = _class_folders(root)   # some class folder holds an image: _locate checked
    present = [c for c in FER2013_CLASSES if c in {normalise_class_name(d.name) for d in class_dirs}]
    decoded = _decode_all(files, img_size, progress)
    images, labels, splits, ids, skipped = [], [], [], [], []
    per_folder: dict[Path, int] = {}
    for f, (img, err) in zip(files, decoded):
        if img is None:
            skipped.append((str(f), err))
            continue
        split = _split_of_dir(f.parent.parent.name) if split_dirs else "Pool"
        if split == "Test":
            for prefix in ("PublicTest", "PrivateTest"):
                if f.name.startswith(prefix + "_"):
                    split = prefix
        images.append(img)
        labels.append(present.index(normalise_class_name(f.parent.name)))
        splits.append(split)
        ids.append(str(f.relative_to(root)))
        per_folder[f.parent] = per_folder.get(f.parent, 0) + 1
    warnings = [f"class folder {c} has no readable images" for c in class_dirs if not per_folder.get(c)]
    if not images:
        raise DataError(f"{root}: no readable images found")
    return {"images": np.stack(images), "labels": np.array(labels, np.int64), "splits": splits, "ids": ids,
            "class_names": present, "skipped": skipped, "warnings": warnings, "layout": "folders"}


def _decode(path: Path, img_size: int) -> tuple[np.ndarray | None, str]:
    """The image at ``img_size``, or None and why not. Never raises: one bad file must not abort a load of
    thousands, and the reason never quotes the file."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        return None, f"cannot read ({e.strerror or type(e).__name__})"
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if buf.size else None
        return (None, "not a decodable image") if img is None else (resize_square(img, img_size), "")
    except cv2.error as e:
        too_large = "CV_IO_MAX_IMAGE" in str(e)   # OpenCV's limits: CV_IO_MAX_IMAGE_PIXELS, _WIDTH, _HEIGHT
        return None, "too large (over OpenCV's image size limit)" if too_large else "not a decodable image"
    except Exception as e:  # noqa: BLE001 (e.g. MemoryError on a huge image within OpenCV's limit)
        return None, f"not a decodable image ({type(e).__name__})"


# --- cache ----------------------------------------------------------------------------------

def _cache_read(folder: Path, with_images: bool = True) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        keys = ("images", "labels") if with_images else ("labels",)
        raw = {k: np.load(folder / f"{k}.npy", allow_pickle=False) for k in keys}
    except (OSError, ValueError):
        return None
    raw.update(meta)
    return raw


def _cache_write(folder: Path, raw: dict) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".tmp"))
        np.save(tmp / "images.npy", raw["images"])
        np.save(tmp / "labels.npy", raw["labels"])
        meta = {k: v for k, v in raw.items() if k not in ("images", "labels")}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError as e:  # a read-only or full cache folder only costs speed
        log.warning("could not write the data cache in %s: %s", folder.parent, e)


# --- splits --------------------------------------------------------------------------------

def _assemble(raw: dict, source: str, val_fraction: float, seed: int) -> FerDataset:
    import torch  # here, not at the top: summarize_dataset needs none

    index, val_name, test_names, warnings = _split_index(raw, val_fraction, seed)
    images = torch.from_numpy(np.ascontiguousarray(raw["images"]))
    labels = torch.from_numpy(raw["labels"].astype(np.int64))
    ids = list(raw["ids"])
    splits = {s: FerSplit(images[torch.from_numpy(ix)], labels[torch.from_numpy(ix)], [ids[i] for i in ix])
              for s, ix in index.items()}
    return FerDataset(tuple(raw["class_names"]), splits, source, val_name, test_names,
                      [tuple(s) for s in raw.get("skipped", [])], warnings)


def _split_index(raw: dict, val_fraction: float, seed: int) -> tuple[dict[str, np.ndarray], str, tuple[str, ...],
                                                                       list[str]]:
    """Image positions per split, the validation split's name, the test splits' names and warnings."""
    split_of = np.array(raw["splits"])
    names = set(split_of.tolist())
    warnings = list(raw.get("warnings", []))
    index: dict[str, np.ndarray] = {}
    if raw["layout"] == "fer2013" or {"PublicTest", "PrivateTest"} <= names:
        for s in FER2013_SPLITS:
            index[s] = np.flatnonzero(split_of == s)
        val_name, test_names = "PublicTest", ("PublicTest", "PrivateTest")
        left_out = int((~np.isin(split_of, FER2013_SPLITS)).sum())
        if left_out:  # e.g. test files without a PublicTest_/PrivateTest_ prefix next to ones with
            warnings.append(f"{left_out} image(s) outside train/ without a PublicTest_/PrivateTest_ prefix "
                            "were left out")
        if not index["PublicTest"].size and index["Training"].size:
            index["Training"], index["PublicTest"] = _stratified(index["Training"], raw["labels"], val_fraction, seed)
            warnings.append("no PublicTest images: a stratified validation split was carved from Training")
            test_names = ("PrivateTest",)
    else:
        train = np.flatnonzero(np.isin(split_of, ["Training", "Pool"]))
        test = np.flatnonzero(np.isin(split_of, ["Test", "PublicTest", "PrivateTest"]))  # one prefix only
        val = np.flatnonzero(split_of == "Validation")
        if not test.size:
            train, test = _stratified(train, raw["labels"], val_fraction, seed + 1)
        if not val.size:
            train, val = _stratified(train, raw["labels"], val_fraction, seed)
        index = {"Training": train, "Validation": val, "Test": test}
        val_name, test_names = "Validation", ("Test",)
    return index, val_name, test_names, warnings


def _stratified(index: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if len(index) < 2:  # nothing to hold out
        return np.sort(index), index[:0]
    y = labels[index]
    counts = np.bincount(y)
    n_classes = int((counts > 0).sum())
    n_held = int(np.ceil(fraction * len(index)))  # as train_test_split rounds a fractional test_size
    # stratifying needs two images a class and at least one a class on each side of the split
    stratify = y if counts[counts > 0].min() >= 2 and min(n_held, len(index) - n_held) >= n_classes else None
    keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(held)
