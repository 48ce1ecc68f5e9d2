"""A reduced CLIP BPE vocabulary: the merges of open_clip's standard BPE that a given corpus uses.

The standard vocabulary has 49,408 tokens; a width-64 embedding table of it alone is 12.6 MB in
float32, more than the whole demo model may weigh. Keeping only the merges that the corpus's
words need (in their original rank order) gives open_clip's own ``SimpleTokenizer`` a file it
reads unchanged (``bpe_path=``) and that splits every corpus word into exactly the same pieces
as the full vocabulary. Any other word still tokenizes, into smaller pieces down to single
bytes, so prompts stay open-vocabulary; the model has just never seen those pieces.

Why the split is unchanged: BPE applies, at each step, the lowest-ranked merge among the pairs
present. A subset that contains every merge the full run applied, in the same order, picks the
same pair at every step, because the picked pair is in the subset and nothing of lower rank is.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterable, List, Tuple

Merge = Tuple[str, str]


def _full_tokenizer():
    import open_clip

    return open_clip.SimpleTokenizer()


def merges_used(corpus: Iterable[str]) -> List[Merge]:
    """The standard BPE merges applied when tokenizing ``corpus``, in their original rank order."""
    tok = _full_tokenizer()
    used = set()
    for text in corpus:
        text = tok.clean_fn(text)
        for word in tok.pat.findall(text):
            encoded = "".join(tok.byte_encoder[b] for b in word.encode("utf-8"))
            used.update(_bpe_trace(tok.bpe_ranks, encoded))
    return sorted(used, key=tok.bpe_ranks.__getitem__)


def _bpe_trace(ranks: dict, token: str) -> List[Merge]:
    """The merges the standard BPE applies to one word, in application order (mirrors SimpleTokenizer.bpe)."""
    word = list(token[:-1]) + [token[-1] + "</w>"]
    applied: List[Merge] = []
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        applied.append(best)
        first, second = best
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return applied


def write_bpe(merges: List[Merge], path: str | Path) -> Path:
    """Write merges in open_clip's format: gzip text, a version line, then one ``a b`` merge per line.

    The gzip header carries no file name or time stamp, so equal merges give byte-identical files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "#version: sfp-reduced\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    os.replace(tmp, path)
    return path

