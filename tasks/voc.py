"""Detection data in the PASCAL VOC layout: flowerbed's one reader of boxes.

Any VOC export works, as a folder or a `.tar` / `.tar.gz` of one (one enclosing top folder allowed):

    images/<name>.jpg            annotations/<name>.xml             domain = the name's prefix
    images/<domain>/<name>.jpg   annotations/<domain>/<name>.xml    domain = the subfolder

(`JPEGImages/` and `Annotations/`, VOC's own folder names, are read the same way.) A name prefix
is the part before the first `-` or `_` (`foggy-012` is in domain `foggy`); a name without one is
in domain `all`. Class names come from the XML's `<object><name>`. An XML box is `<bndbox>` xmin
ymin xmax ymax in pixels of the image it annotates.

Images are decoded with Pillow, resized to a square `size` x `size` RGB (the detectors train on
one fixed size, so a batch is one tensor) and their boxes scaled with them. A box is one row
`[label, x1, y1, x2, y2]`; an image's rows are padded to the dataset's largest count with label -1
(`PAD`), so a dataset's targets are one array (n, M, 5), indexable like classification labels.

Refused with one line (`ConfigError`, exit 2): a box outside its image or with xmin >= xmax
(ymin >= ymax), an image without its XML where labels are required, an XML naming a class outside
the run's list, an unreadable XML or image, a layout without `images/`.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from xml.etree import ElementTree

import numpy as np

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.imagefolder import IMAGE_SUFFIXES

PAD = -1.0
IMAGE_DIRS = ("images", "jpegimages")
ANNOTATION_DIRS = ("annotations",)
LAYOUT = "the VOC layout (images/*.jpg + annotations/*.xml, or images/<domain>/ + annotations/<domain>/; one top folder allowed)"


@dataclass(frozen=True)
class Box:
    name: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class DetectionArrays:
    """Decoded images uint8 (n, 3, S, S), targets (n, M, 5) padded with `PAD`, a domain per image."""

    images: np.ndarray
    targets: np.ndarray
    domains: np.ndarray  # index into domain_names
    domain_names: tuple[str, ...]
    class_names: tuple[str, ...]
    names: tuple[str, ...] = ()  # each image's name, for drawings and error lines
    labeled: np.ndarray | None = None  # False for an image without an annotation (only where allowed)


# -- what is there ----------------------------------------------------------------------------------
def _files(path: Path, key: str) -> dict[str, Path | bytes]:
    """Image and XML files by relative POSIX path, lower-cased top folders; hidden names skipped."""
    wanted = (*IMAGE_SUFFIXES, ".xml")
    files: dict[str, Path | bytes] = {}
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(path).as_posix()
            if file.is_file() and rel.lower().endswith(wanted) and not any(p.startswith(".") for p in PurePosixPath(rel).parts):
                files[rel] = file
        return files
    if not path.exists():
        raise ConfigError.invalid(key, str(path), f"an existing folder or .tar/.tar.gz in {LAYOUT}")
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                name = member.name.lstrip("./")
                if member.isfile() and name.lower().endswith(wanted) and not any(p.startswith(".") for p in PurePosixPath(name).parts):
                    handle = tar.extractfile(member)
                    files[name] = handle.read() if handle else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise ConfigError.invalid(key, str(path), f"a folder or a readable .tar/.tar.gz ({type(err).__name__})") from err
    return files


def _split_layout(files: dict[str, Path | bytes], key: str, path: Path) -> tuple[dict, dict]:
    """(images, annotations), each keyed by the path under its folder without suffix (`haze/012`)."""
    tops = {PurePosixPath(n).parts[0] for n in files}
    if len(tops) == 1 and tops.pop().lower() not in (*IMAGE_DIRS, *ANNOTATION_DIRS):  # one enclosing folder
        files = {str(PurePosixPath(*PurePosixPath(n).parts[1:])): v for n, v in files.items() if len(PurePosixPath(n).parts) > 1}
    images: dict[str, Path | bytes] = {}
    annotations: dict[str, Path | bytes] = {}
    for name, value in files.items():
        parts = PurePosixPath(name).parts
        if len(parts) < 2:
            continue
        stem = str(PurePosixPath(*parts[1:]).with_suffix(""))
        if parts[0].lower() in IMAGE_DIRS and not name.lower().endswith(".xml"):
            images[stem] = value
        elif parts[0].lower() in ANNOTATION_DIRS and name.lower().endswith(".xml"):
            annotations[stem] = value
    if not images:
        raise ConfigError.invalid(key, str(path), f"{LAYOUT}: no images found")
    return images, annotations


def domain_of(stem: str) -> str:
    """`haze/012` -> haze (a subfolder); `foggy-012` -> foggy (a name prefix); else `all`."""
    parts = PurePosixPath(stem).parts
    if len(parts) > 1:
        return parts[0]
    for sep in ("-", "_"):
        if sep in stem:
            return stem.split(sep, 1)[0]
    return "all"


def _read(value: Path | bytes) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value


def parse_annotation(data: bytes, where: str, width: int, height: int) -> list[Box]:
    """The boxes of one VOC XML, checked against the image's size (width x height pixels)."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as err:
        raise ConfigError(f"{where}: not a readable VOC XML ({err})") from err
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr, arg-type]
        except (AttributeError, TypeError, ValueError) as err:
            raise ConfigError(f"{where}: object {name!r} needs a <bndbox> with numeric xmin, ymin, xmax, ymax") from err
        if not name:
            raise ConfigError(f"{where}: an <object> without a <name>")
        if x1 >= x2 or y1 >= y2:
            raise ConfigError(f"{where}: box of {name!r} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) has xmin >= xmax or ymin >= ymax")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise ConfigError(f"{where}: box of {name!r} ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside its {width}x{height} image")
        boxes.append(Box(name, x1, y1, x2, y2))
    return boxes


def parse_classes(text: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """`dataset.classes`: "car,large_vehicle=bus+truck,person" -> (run classes, XML name -> run class).

    Empty: every class the XML names, sorted (the returned map is then empty, meaning identity)."""
    classes: list[str] = []
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in str(text or "").split(",")):
        if not item:
            continue
        target, _, sources = item.partition("=")
        classes.append(target.strip())
        for source in (sources.split("+") if sources else [target]):
            mapping[source.strip()] = target.strip()
    return tuple(classes), mapping


def load_voc(path: str | Path, image_size: int, classes: str = "", key: str = "dataset.path",
             require_labels: bool = True) -> DetectionArrays:
    """Every image of a VOC folder or archive, resized to `image_size`, with its boxes and domain."""
    from PIL import Image, UnidentifiedImageError

    root = Path(str(path)).expanduser()
    images, annotations = _split_layout(_files(root, key), key, root)
    run_classes, mapping = parse_classes(classes)
    decoded, parsed, names, labeled = [], [], [], []
    for stem in sorted(images):
        where = f"{key}={root}: {stem}"
        try:
            with Image.open(io.BytesIO(_read(images[stem]))) as img:
                width, height = img.size
                decoded.append(np.asarray(img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)))
        except (UnidentifiedImageError, OSError) as err:
            raise ConfigError(f"{where}: not a readable image ({type(err).__name__})") from err
        if stem not in annotations:
            if require_labels:
                raise ConfigError(f"{where}: image without an annotation (annotations/{stem}.xml), and labels are required here")
            parsed.append([])
            labeled.append(False)
        else:
            boxes = parse_annotation(_read(annotations[stem]), f"{where}.xml", width, height)
            parsed.append([(b, image_size / width, image_size / height) for b in boxes])
            labeled.append(True)
        names.append(stem)
    found = sorted({box.name for boxes in parsed for box, _, _ in boxes})
    if not run_classes:
        run_classes, mapping = tuple(found), {name: name for name in found}
    outside = [name for name in found if name not in mapping]
    if outside:
        raise ConfigError.invalid("dataset.classes", classes, f"a list naming every XML class; {outside[0]!r} is outside it "
                                  f"(found: {', '.join(found)}; merge with name=a+b)")
    rows = [[(run_classes.index(mapping[b.name]), b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy) for b, sx, sy in boxes] for boxes in parsed]
    domain_list = [domain_of(stem) for stem in names]
    domain_names = tuple(sorted(set(domain_list)))
    return DetectionArrays(
        images=np.stack(decoded).transpose(0, 3, 1, 2).copy(),
        targets=pad_targets(rows),
        domains=np.array([domain_names.index(d) for d in domain_list], dtype=np.int64),
        domain_names=domain_names,
        class_names=run_classes,
        names=tuple(names),
        labeled=np.array(labeled, dtype=bool),
    )


def pad_targets(rows: list[list[tuple[float, float, float, float, float]]]) -> np.ndarray:
    """Per-image box rows -> one (n, M, 5) float32 array, short images padded with label `PAD`."""
    width = max([len(r) for r in rows] + [1])
    out = np.zeros((len(rows), width, 5), dtype=np.float32)
    out[:, :, 0] = PAD
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = np.asarray(r, dtype=np.float32)
    return out


def write_voc(folder: Path, arrays: DetectionArrays) -> None:
    """The dataset as a VOC folder (images/<name>.jpg, annotations/<name>.xml): for tests and for
    users who want the generated set as files."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(arrays.names):
        h, w = arrays.images.shape[2:]
        Image.fromarray(arrays.images[i].transpose(1, 2, 0)).save(folder / "images" / f"{name}.jpg", quality=95)
        objects = "".join(
            f"<object><name>{arrays.class_names[int(r[0])]}</name><bndbox><xmin>{r[1]:.1f}</xmin><ymin>{r[2]:.1f}</ymin>"
            f"<xmax>{r[3]:.1f}</xmax><ymax>{r[4]:.1f}</ymax></bndbox></object>"
            for r in arrays.targets[i] if r[0] != PAD
        )
        xml = f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"
        (folder / "annotations" / f"{name}.xml").write_text(xml)
