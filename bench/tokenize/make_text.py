#!/usr/bin/env python3
"""Writes the benchmark text: 1 MiB (1 048 576 bytes) of mixed English and code.

Both halves come from the llama-cpp-python 0.3.36 sdist (pinned by sha256 in
tests/fixtures/tokenizer/fetch-vocabs.sh), so every machine benchmarks the same bytes:
English prose from its Markdown documentation, code from llama.cpp's C++ sources and the
Python bindings. They alternate in chunks of about 16 KiB, cut at line ends.

Usage: make_text.py SDIST.tar.gz OUT.txt
"""
import sys
import tarfile

TARGET = 1 << 20
CHUNK = 16 << 10


def read_all(tar: tarfile.TarFile, pred) -> str:
    names = sorted(m.name for m in tar.getmembers() if m.isfile() and pred(m.name))
    parts = []
    for n in names:
        data = tar.extractfile(n).read()
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return "\n".join(parts)


def chunks(text: str):
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos + CHUNK)
        end = len(text) if end < 0 else end + 1
        yield text[pos:end]
        pos = end


def main() -> None:
    with tarfile.open(sys.argv[1]) as tar:
        english = read_all(tar, lambda n: n.endswith(".md") and "/vendor/llama.cpp/docs/" in n or n.endswith("/CHANGELOG.md"))
        code = read_all(
            tar,
            lambda n: ("/vendor/llama.cpp/src/llama-" in n and n.endswith(".cpp")) or ("/llama_cpp/" in n and n.endswith(".py")),
        )
    out = []
    size = 0
    for e, c in zip(chunks(english), chunks(code)):
        for piece in (e, c):
            out.append(piece)
            size += len(piece.encode("utf-8"))
        if size >= TARGET:
            break
    data = "".join(out).encode("utf-8")[:TARGET]
    # Do not end inside a UTF-8 sequence.
    text = data.decode("utf-8", errors="ignore")
    with open(sys.argv[2], "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"{len(text.encode('utf-8'))} bytes ({len(english)} English and {len(code)} code characters available)", file=sys.stderr)


if __name__ == "__main__":
    main()
