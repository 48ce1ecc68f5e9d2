"""Class-name files: one class per line, its synonyms comma-separated (each synonym is one text query).

A bare name ("voc21") means the packaged file sfp/data/class_names/voc21.txt; anything else is a path.
The file's sha256 is recorded with every result, since the wording moves published numbers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

from sfp.errors import DataError

CLASS_NAMES_DIR = Path(__file__).resolve().parent / "class_names"


def file_sha256(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ClassNames:
    synonyms: Tuple[Tuple[str, ...], ...]  # per class, its synonyms in file order
    path: str
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.synonyms)

    @property
    def display_names(self) -> List[str]:
        return [s[0] for s in self.synonyms]


def packaged_class_names() -> List[str]:
    return sorted(p.stem for p in CLASS_NAMES_DIR.glob("*.txt"))


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".txt") or "/" in spec or "\\" in spec or spec.startswith(("~", "."))


def resolve_class_names_path(spec: str) -> Path:
    if not spec or spec == "???":
        raise DataError("class_names is not set: give a packaged name (e.g. 'voc21') or a .txt path")
    if _looks_like_path(spec):
        tried = [Path(spec).expanduser()]
    else:
        # A bare name may also be a file in the working directory (without .txt).
        tried = [CLASS_NAMES_DIR / f"{spec}.txt", Path(spec)]
    for p in tried:
        if p.is_file():
            return p
    raise DataError(
        f"class-name file not found for {spec!r}: tried {', '.join(str(p) for p in tried)}; "
        f"packaged names: {', '.join(packaged_class_names())}"
    )


def parse_class_names(text: str, path: str) -> Tuple[Tuple[str, ...], ...]:
    classes = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            # A blank line would silently shift every later class index.
            raise DataError(f"{path}, line {lineno}: empty line (one class per line, no blank lines)")
        names = tuple(s.strip() for s in line.split(","))
        if any(not s for s in names):
            raise DataError(f"{path}, line {lineno}: empty synonym in {line.strip()!r}")
        classes.append(names)
    if not classes:
        raise DataError(f"{path}: class-name file has no classes")
    _refuse_duplicate_classes(classes, path)
    return tuple(classes)


def _refuse_duplicate_classes(classes: List[Tuple[str, ...]], path: str) -> None:
    """A class named twice (its first synonym, ignoring case and spacing) would merge two classes' results."""
    first_line: Dict[str, int] = {}
    for lineno, names in enumerate(classes, start=1):
        key = " ".join(names[0].lower().split())
        if key in first_line:
            raise DataError(f"{path}, lines {first_line[key]} and {lineno}: the class {names[0]!r} is named twice "
                            "(class names must differ, ignoring case and spacing)")
        first_line[key] = lineno


def load_class_names(spec: Union[str, Path]) -> ClassNames:
    path = resolve_class_names_path(str(spec))
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read class-name file {path}: {e}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"class-name file {path} is not UTF-8: {e}") from e
    synonyms = parse_class_names(text, str(path))
    return ClassNames(synonyms=synonyms, path=str(path), sha256=hashlib.sha256(raw).hexdigest())
