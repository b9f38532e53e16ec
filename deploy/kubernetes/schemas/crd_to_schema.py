#!/usr/bin/env python3
"""Turns one version of a CustomResourceDefinition into the JSON Schema that
deploy/kubernetes/validate.py checks our manifests against, offline.

    crd_to_schema.py CRD.yaml VERSION OUT.json --source "REPO@TAG (COMMIT), PATH, LICENSE"

What changes on the way (OpenAPI v3 as the API server reads it -> JSON Schema 2020-12):
- `description`s are dropped (they are most of the bytes, and no check reads them);
- every object that lists `properties`, and neither has `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields`, gets `additionalProperties: false`: the API
  server prunes unknown fields silently (or refuses them under strict field validation),
  so a misspelt field is an error here rather than a setting that quietly does nothing;
- `x-kubernetes-int-or-string` becomes a type of integer or string;
- `status` is dropped (we never write it);
- `x-kubernetes-validations` (CEL rules) are kept as they are: jsonschema ignores them,
  and validate.py evaluates the ones it knows by hand and counts the rest as not checked.

The schemas in this folder were made with it from the released CRDs named in each file's
`$comment`; rerun it on the next release's CRD to update one.
"""

import argparse
import json
import sys

import yaml


def convert(node):
    if isinstance(node, list):
        return [convert(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "description":
            continue
        if key == "x-kubernetes-int-or-string" and value:
            out.pop("type", None)
            out["type"] = ["integer", "string"]
            continue
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {k: convert(v) for k, v in value.items()}
        else:
            out[key] = convert(value)
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("crd")
    ap.add_argument("version")
    ap.add_argument("out")
    ap.add_argument("--source", required=True, help="where the CRD came from, its tag and licence")
    args = ap.parse_args()
    with open(args.crd) as f:
        crd = yaml.safe_load(f)
    spec = crd["spec"]
    versions = [v for v in spec["versions"] if v["name"] == args.version]
    if not versions:
        sys.exit(f"{args.crd}: no version {args.version}")
    schema = versions[0]["schema"]["openAPIV3Schema"]
    schema.get("properties", {}).pop("status", None)
    schema = convert(schema)
    group, kind = spec["group"], spec["names"]["kind"]
    # The object's identity is fixed: a document of another kind or version must not pass.
    schema["properties"]["apiVersion"] = {"const": f"{group}/{args.version}"}
    schema["properties"]["kind"] = {"const": kind}
    # metadata is `type: object` in every CRD; the name is what we rely on.
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}},
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"{kind} {group}/{args.version}, derived by deploy/kubernetes/schemas/crd_to_schema.py "
                    f"from {args.source}",
        **schema,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
