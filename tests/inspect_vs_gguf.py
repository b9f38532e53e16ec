#!/usr/bin/env python3
"""Checks `hearth inspect --json` against the `gguf` Python package's GGUFReader.

Usage: python3 tests/inspect_vs_gguf.py HEARTH_BIN GGUF_FILE

Compares the header (version, counts, alignment, data offset), every metadata key in
order with its type and value (scalars exactly; arrays by element type, length and the
items the JSON includes, nested arrays recursively), and every tensor's name, type,
shape, offset and byte size. Prints each difference and exits 1 if there is any.

GGUFReader flattens nested arrays in `ReaderField.data`, so values are decoded here from
the field's raw `parts`, which keep the file's structure. One known divergence: for Q8_1
the package's GGML_QUANT_SIZES says 40 bytes per block where ggml's block_q8_1 is 36;
hearth follows ggml, so a Q8_1 tensor would show a size difference.
"""

import json
import math
import subprocess
import sys

from gguf import GGUFReader, GGUFValueType

# GGUFReader's first three fields are the header, not metadata keys.
HEADER_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


def scalar(v):
    """A numpy scalar as the JSON hearth writes for it."""
    v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def skip(parts, i, vtype):
    """The index of the part after a value of `vtype` starting at parts[i]."""
    if vtype == GGUFValueType.STRING:
        return i + 2
    if vtype != GGUFValueType.ARRAY:
        return i + 1
    itype = GGUFValueType(int(parts[i][0]))
    n = int(parts[i + 1][0])
    i += 2
    if itype == GGUFValueType.STRING:
        return i + 2 * n
    if itype != GGUFValueType.ARRAY:
        return i + n
    for _ in range(n):
        i = skip(parts, i, itype)
    return i


def decode(parts, i, vtype, n_items):
    """The value starting at parts[i], shaped like hearth's JSON, with at most `n_items`
    items of each array decoded (a dict for arrays)."""
    if vtype == GGUFValueType.STRING:
        return bytes(parts[i + 1]).decode("utf-8")
    if vtype != GGUFValueType.ARRAY:
        return scalar(parts[i][0])
    itype = GGUFValueType(int(parts[i][0]))
    n = int(parts[i + 1][0])
    i += 2
    items = []
    for _ in range(min(n, n_items)):
        items.append(decode(parts, i, itype, n_items))
        i = skip(parts, i, itype)
    return {"type": "ARRAY", "element_type": itype.name, "len": n, "items": items}


def same(a, b):
    """Equal values of the same JSON kind (True is not 1, 1 is not 1.0)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def ours_value(entry):
    """Hearth's JSON entry reduced to what `decode` produces."""
    if entry["type"] != "ARRAY":
        return entry["value"]

    def arr(e):
        return {
            "type": "ARRAY",
            "element_type": e["element_type"],
            "len": e["len"],
            "items": [arr(x) if isinstance(x, dict) else x for x in e["items"]],
        }

    return arr(entry)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    hearth, path = sys.argv[1], sys.argv[2]
    out = subprocess.run(
        [hearth, "inspect", "--json", path], capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"hearth inspect failed ({out.returncode}): {out.stderr.strip()}")
    ours = json.loads(out.stdout)
    reader = GGUFReader(path)
    diffs = []

    def check(what, a, b):
        if not same(a, b):
            diffs.append(f"{what}: hearth={a!r} gguf={b!r}")

    fields = list(reader.fields.values())
    header = {f.name: scalar(f.parts[-1][0]) for f in fields[:3]}
    check("header fields", [f.name for f in fields[:3]], list(HEADER_FIELDS))
    check("version", ours["version"], header.get("GGUF.version"))
    check("tensor_count", ours["tensor_count"], header.get("GGUF.tensor_count"))
    check("metadata_count", ours["metadata_count"], header.get("GGUF.kv_count"))
    check("alignment", ours["alignment"], int(reader.alignment))
    check("data_offset", ours["data_offset"], int(reader.data_offset))

    theirs_kv = fields[3:]
    check("metadata keys", [e["key"] for e in ours["metadata"]], [f.name for f in theirs_kv])
    for e, f in zip(ours["metadata"], theirs_kv):
        key = e["key"]
        vtype = f.types[0]
        check(f"metadata '{key}' type", e["type"], vtype.name)
        # parts: key length, key bytes, value type, then the value.
        n_items = len(e.get("items", []))
        theirs = decode(f.parts, 3, vtype, n_items)
        check(f"metadata '{key}' value", ours_value(e), theirs)
        if vtype == GGUFValueType.ARRAY:
            check(f"metadata '{key}' items_truncated", e["items_truncated"], n_items < theirs["len"])

    check("tensor count", len(ours["tensors"]), len(reader.tensors))
    for t, r in zip(ours["tensors"], reader.tensors):
        name = t["name"]
        check("tensor name", name, r.name)
        check(f"tensor '{name}' type", t["type"], r.tensor_type.name)
        check(f"tensor '{name}' shape", t["shape"], [int(d) for d in r.shape])
        check(f"tensor '{name}' n_elements", t["n_elements"], int(r.n_elements))
        check(f"tensor '{name}' file_offset", t["file_offset"], int(r.data_offset))
        check(f"tensor '{name}' offset", t["offset"], int(r.data_offset) - int(reader.data_offset))
        check(f"tensor '{name}' n_bytes", t["n_bytes"], int(r.n_bytes))

    totals = {}
    for r in reader.tensors:
        n, b = totals.get(r.tensor_type.name, (0, 0))
        totals[r.tensor_type.name] = (n + 1, b + int(r.n_bytes))
    check(
        "totals",
        {x["type"]: [x["tensors"], x["bytes"]] for x in ours["totals"]},
        {k: [n, b] for k, (n, b) in totals.items()},
    )

    if diffs:
        print(f"{len(diffs)} difference(s) between hearth and gguf for {path}:")
        for d in diffs[:100]:
            print("  " + d)
        sys.exit(1)
    print(
        f"ok: {path}: {len(theirs_kv)} metadata keys and "
        f"{len(reader.tensors)} tensors agree with gguf"
    )


if __name__ == "__main__":
    main()
