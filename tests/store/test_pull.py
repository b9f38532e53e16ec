"""`hearth pull`, `hearth list` and `hearth rm` against a stand-in hub (tests/store/hub.py).

The hub serves the default model (Gemma 3 270M Q4_K_M, $HEARTH_MODEL, from
scripts/fetch-model.sh) under hub paths, the same model split into three parts by the
`gguf` Python package (as llama.cpp's gguf-split lays them out), and small generated
files. Every test gets an empty store ($HEARTH_MODELS) and drives the built binary
($HEARTH_BIN, default target/release/hearth) with HF_ENDPOINT pointing at the hub. Run by
scripts/test-store.sh.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hub as hub_module  # noqa: E402

import gguf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.abspath(os.environ.get("HEARTH_BIN", os.path.join(ROOT, "target/release/hearth")))
MODEL = os.environ.get("HEARTH_MODEL", "")

REPO = "google/gemma-3-270m-GGUF"
FILE = "gemma-3-270m-Q4_K_M.gguf"
NAME = f"{REPO}/gemma-3-270m-Q4_K_M"
PROMPT = "The capital of France is"

hub = None
tmp = None
fixtures = {}


def make_split(src, out_dir, stem, n_parts):
    """Writes `src` as `n_parts` split files with the gguf package's split writer (the
    tensors spread evenly, part 1 holding the metadata); returns their paths."""
    reader = gguf.GGUFReader(src)
    per_part = -(-len(reader.tensors) // n_parts)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(os.path.join(out_dir, stem + ".gguf"), arch=arch, split_max_tensors=per_part)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    for t in reader.tensors:
        writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return [os.path.join(out_dir, f"{stem}-{i:05d}-of-{n_parts:05d}.gguf") for i in range(1, n_parts + 1)]


def make_tiny(path, seed):
    """A small valid GGUF file (no model to run: for transfer tests)."""
    import numpy as np
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_context_length(64)
    writer.add_file_type(0)
    rng = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", rng.standard_normal((256, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def setUpModule():
    global hub, tmp
    if not MODEL or not os.path.isfile(MODEL):
        raise unittest.SkipTest("HEARTH_MODEL is not set (scripts/test-store.sh sets it)")
    if not os.access(BIN, os.X_OK):
        raise unittest.SkipTest(f"{BIN} is missing; build it with cargo build --release --bin hearth")
    tmp = tempfile.mkdtemp(prefix="hearth-store-test-")
    split_dir = os.path.join(tmp, "split")
    os.mkdir(split_dir)
    parts = make_split(MODEL, split_dir, "gemma-3-270m-Q4_K_M", 3)
    fixtures["tiny"] = make_tiny(os.path.join(tmp, "tiny.gguf"), 1)
    fixtures["not_gguf"] = os.path.join(tmp, "readme.md")
    with open(fixtures["not_gguf"], "w") as f:
        f.write("# Not a model\n" * 100)
    hub = hub_module.Hub({
        REPO: {FILE: MODEL, "README.md": fixtures["not_gguf"]},
        "test/gemma-split-GGUF": {
            f"Q4_K_M/{os.path.basename(p)}": p for p in parts
        } | {"Q8_0/other-Q8_0.gguf": fixtures["tiny"]},
        "test/ambiguous-GGUF": {"a-Q4_0.gguf": fixtures["tiny"], "b-Q4_0.gguf": fixtures["tiny"],
                                "c-Q8_0.gguf": fixtures["tiny"]},
        "test/tiny-GGUF": {"tiny-F32.gguf": fixtures["tiny"], "broken.gguf": fixtures["not_gguf"]},
    }, page_size=2).start()


def tearDownModule():
    if hub is not None:
        hub.stop()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256(path):
    return hub_module.sha256_file(path)


class StoreTest(unittest.TestCase):
    def setUp(self):
        hub.reset()
        self.store = tempfile.mkdtemp(prefix="store-", dir=tmp)

    def tearDown(self):
        shutil.rmtree(self.store, ignore_errors=True)

    def hearth(self, *args, env=None, check=True):
        full_env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HEARTH_MODELS")}
        full_env.update({"HF_ENDPOINT": hub.url, "HEARTH_MODELS": self.store,
                         "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
        full_env.update(env or {})
        p = subprocess.run([BIN, *args], env=full_env, capture_output=True, text=True, timeout=300)
        if check and p.returncode != 0:
            self.fail(f"hearth {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
        return p

    def files(self):
        """Every file in the store, relative paths."""
        out = []
        for d, _, names in os.walk(self.store):
            out += [os.path.relpath(os.path.join(d, n), self.store) for n in names]
        return sorted(out)

    def listed(self):
        return json.loads(self.hearth("list", "--json").stdout)

    def run_model(self, model, check=True):
        return self.hearth("run", model, "-p", PROMPT, "-n", "8", "--temp", "0", "-t", "2", check=check)

    def test_cut_download_resumes(self):
        hub.cut_once = True
        p = self.hearth("pull", f"hf:{REPO}/{FILE}")
        self.assertEqual(p.stdout.strip(), NAME)
        self.assertEqual(self.files(), [f"{REPO}/{FILE}"])
        self.assertEqual(sha256(os.path.join(self.store, REPO, FILE)), sha256(MODEL))
        size = os.path.getsize(MODEL)
        gets = hub.requests(role="hub", method="GET", path_part="/cdn/")
        self.assertEqual(len(gets), 2, gets)
        self.assertIsNone(gets[0]["range"])
        # The second request continued where the cut left the part.
        self.assertEqual(gets[1]["range"], f"bytes={size // 2}-")
        self.assertLess(hub.bytes_sent, 2 * size)
        self.assertEqual(hub.bytes_sent, size)
        self.assertIn("trying again", p.stderr)
        self.assertIn("verified", p.stderr)

    def test_a_part_left_by_an_earlier_run_is_continued(self):
        size = os.path.getsize(MODEL)
        have = size * 2 // 5
        os.makedirs(os.path.join(self.store, REPO))
        with open(MODEL, "rb") as src, open(os.path.join(self.store, REPO, FILE + ".part"), "wb") as dst:
            dst.write(src.read(have))
        p = self.hearth("pull", f"{REPO}:Q4_K_M")
        self.assertIn("resuming", p.stderr)
        gets = hub.requests(method="GET", path_part="/cdn/")
        self.assertEqual([g["range"] for g in gets], [f"bytes={have}-"])
        self.assertEqual(hub.bytes_sent, size - have)
        self.assertEqual(sha256(os.path.join(self.store, REPO, FILE)), sha256(MODEL))
        self.assertEqual(self.files(), [f"{REPO}/{FILE}"])

    def test_a_corrupt_part_fails_the_hash_and_is_removed(self):
        # The resumed bytes are hashed with the part's: a part that is not the file's
        # beginning cannot pass.
        os.makedirs(os.path.join(self.store, REPO))
        with open(os.path.join(self.store, REPO, FILE + ".part"), "wb") as dst:
            dst.write(b"\0" * 1000)
        p = self.hearth("pull", f"hf:{REPO}/{FILE}", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("SHA-256 mismatch", p.stderr)
        self.assertEqual(self.files(), [])

    def test_wrong_hash_is_refused(self):
        hub.wrong_hash = True
        for ref in (f"hf:{REPO}/{FILE}", f"{REPO}:q4_k_m"):
            p = self.hearth("pull", ref, check=False)
            self.assertNotEqual(p.returncode, 0, ref)
            self.assertIn("SHA-256 mismatch", p.stderr)
            self.assertIn("not stored", p.stderr)
            self.assertEqual(p.stdout, "")
            self.assertEqual(self.files(), [], ref)
            # Not even the folders made for it.
            self.assertEqual(os.listdir(self.store), [], ref)
        self.assertEqual(self.listed(), [])
        run = self.run_model(NAME, check=False)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("no stored model", run.stderr)

    def test_list_run_and_remove_by_name(self):
        p = self.hearth("pull", f"{REPO}:q4_k_m")
        self.assertEqual(p.stdout.strip(), NAME)
        self.assertIn(f"{REPO}:q4_k_m is {FILE}", p.stderr)
        [row] = self.listed()
        self.assertEqual(row["name"], NAME)
        self.assertEqual(row["architecture"], "gemma3")
        self.assertEqual(row["quant"], "Q4_K_M")
        self.assertEqual(row["context_length"], 32768)
        self.assertTrue(260e6 < row["parameters"] < 275e6, row)
        self.assertEqual(row["size"], os.path.getsize(MODEL))
        table = self.hearth("list").stdout.splitlines()
        self.assertEqual(table[0].split(), ["NAME", "SIZE", "ARCH", "QUANT", "PARAMS", "CONTEXT"])
        self.assertEqual(table[1].split(), [NAME, "253", "MB", "gemma3", "Q4_K_M", "268M", "32768"])

        # By its full name, its file name, and its repository.
        direct = self.run_model(MODEL).stdout
        self.assertTrue(direct.strip(), "the model said nothing")
        for name in (NAME, "gemma-3-270m-Q4_K_M", REPO, f"{REPO}:Q4_K_M"):
            self.assertEqual(self.run_model(name).stdout, direct, name)
        inspect = json.loads(self.hearth("inspect", "--json", NAME).stdout)
        self.assertIn("metadata", inspect)

        # A second pull finds it there.
        again = self.hearth("pull", f"hf:{REPO}/{FILE}")
        self.assertIn("already in the store", again.stderr)
        self.assertEqual(hub.requests(path_part="/cdn/", method="GET")[1:], [])

        # rm: an unknown or ambiguous name removes nothing; the name removes the file
        # and its empty folders, and nothing else in the store.
        keep = os.path.join(self.store, "mine.txt")
        open(keep, "w").close()
        p = self.hearth("rm", "gemma", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no stored model named 'gemma'", p.stderr)
        self.hearth("rm", NAME)
        self.assertEqual(self.files(), ["mine.txt"])
        self.assertEqual(os.listdir(self.store), ["mine.txt"])
        self.assertEqual(self.listed(), [])
        p = self.hearth("rm", NAME, check=False)
        self.assertNotEqual(p.returncode, 0)

    def test_list_skips_unreadable_files(self):
        os.makedirs(os.path.join(self.store, "bench"))
        shutil.copy(fixtures["tiny"], os.path.join(self.store, "bench", "tiny.gguf"))
        with open(os.path.join(self.store, "broken.gguf"), "w") as f:
            f.write("not a model")
        with open(os.path.join(self.store, "half.gguf.part"), "w") as f:
            f.write("GGUF")
        p = self.hearth("list", "--json")
        rows = json.loads(p.stdout)
        self.assertEqual([r["name"] for r in rows], ["bench/tiny"])
        self.assertEqual(rows[0]["quant"], "F32")
        self.assertIn("skipping", p.stderr)
        self.assertIn("broken.gguf", p.stderr)
        self.assertNotIn("half", p.stdout + p.stderr)

    def test_quant_resolution(self):
        repo = "test/ambiguous-GGUF"
        p = self.hearth("pull", f"{repo}:Q4_0", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("several GGUF files match 'Q4_0': a-Q4_0.gguf, b-Q4_0.gguf", p.stderr)
        p = self.hearth("pull", f"{repo}:Q5_K_M", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("no GGUF file matches 'Q5_K_M'", p.stderr)
        self.assertIn("c-Q8_0.gguf", p.stderr)
        p = self.hearth("pull", repo, check=False)
        self.assertIn("has 3 models", p.stderr)
        p = self.hearth("pull", "test/no-such-repo:Q4_0", check=False)
        self.assertIn("no such repository", p.stderr)
        self.assertEqual(self.files(), [])
        # The file list came in pages of 2 (Link: rel="next"), all of them read.
        self.assertGreaterEqual(len(hub.requests(path_part=f"/api/models/{repo}/tree/main")), 2)
        self.assertEqual(self.hearth("pull", f"{repo}:q8_0").stdout.strip(), f"{repo}/c-Q8_0")

    def test_split_model_is_pulled_and_merged(self):
        repo = "test/gemma-split-GGUF"
        p = self.hearth("pull", f"{repo}:Q4_K_M")
        name = f"{repo}/Q4_K_M/gemma-3-270m-Q4_K_M"
        self.assertEqual(p.stdout.strip(), name)
        self.assertIn("merged 3 parts", p.stderr)
        self.assertEqual(len(hub.requests(method="GET", path_part="/cdn/")), 3)
        # Only the merged file is left.
        self.assertEqual(self.files(), [f"{name}.gguf"])
        merged = gguf.GGUFReader(os.path.join(self.store, f"{name}.gguf"))
        original = gguf.GGUFReader(MODEL)
        self.assertFalse([k for k in merged.fields if k.startswith("split.")])
        self.assertEqual([t.name for t in merged.tensors], [t.name for t in original.tensors])
        for a, b in zip(merged.tensors, original.tensors):
            self.assertEqual((a.tensor_type, list(a.shape)), (b.tensor_type, list(b.shape)), a.name)
            self.assertEqual(a.data.tobytes(), b.data.tobytes(), a.name)
        [row] = self.listed()
        self.assertEqual((row["name"], row["architecture"], row["quant"]), (name, "gemma3", "Q4_K_M"))
        self.assertEqual(self.run_model(name).stdout, self.run_model(MODEL).stdout)

        # A reference to any one part pulls the whole model.
        self.hearth("rm", name)
        self.assertEqual(self.files(), [])
        part2 = f"hf:{repo}/Q4_K_M/gemma-3-270m-Q4_K_M-00002-of-00003.gguf"
        self.assertEqual(self.hearth("pull", part2).stdout.strip(), name)

    def test_token_goes_to_the_hub_only(self):
        hub.token = "hf_secret"
        hub.cdn_elsewhere = True
        try:
            p = self.hearth("pull", "test/tiny-GGUF:F32", check=False)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("HF_TOKEN", p.stderr)
            hub.log.clear()
            p = self.hearth("pull", "test/tiny-GGUF:F32", env={"HF_TOKEN": "hf_secret"})
            self.assertEqual(p.stdout.strip(), "test/tiny-GGUF/tiny-F32")
        finally:
            hub.cdn_elsewhere = False
        hub_requests = hub.requests(role="hub")
        cdn_requests = hub.requests(role="cdn")
        self.assertTrue(hub_requests and cdn_requests)
        self.assertTrue(all(r["authorization"] for r in hub_requests), hub_requests)
        self.assertFalse(any(r["authorization"] for r in cdn_requests), cdn_requests)

    def test_urls(self):
        # A hub URL on another endpoint is a plain URL: stored under its host, still
        # verified by the hub's X-Linked-Etag on the way.
        url = f"{hub.url}/test/tiny-GGUF/resolve/main/tiny-F32.gguf"
        p = self.hearth("pull", url, env={"HF_ENDPOINT": "https://hub.invalid"})
        self.assertEqual(p.stdout.strip(), "127.0.0.1/tiny-F32")
        self.assertIn("verified", p.stderr)
        # The same URL with this hub as the endpoint is a hub reference.
        p = self.hearth("pull", url)
        self.assertEqual(p.stdout.strip(), "test/tiny-GGUF/tiny-F32")
        # Plain http to another machine is refused before any connection.
        p = self.hearth("pull", "http://models.example/m.gguf", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("plain http:// is only allowed to this machine", p.stderr)
        p = self.hearth("pull", "hf:test/tiny-GGUF/../x.gguf", check=False)
        self.assertNotEqual(p.returncode, 0)
        p = self.hearth("pull", "hf:test/tiny-GGUF/missing.gguf", check=False)
        self.assertIn("404", p.stderr)
        self.assertEqual(self.files(), ["127.0.0.1/tiny-F32.gguf", "test/tiny-GGUF/tiny-F32.gguf"])

    def test_a_file_that_is_not_gguf_is_not_stored(self):
        p = self.hearth("pull", "hf:test/tiny-GGUF/broken.gguf", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("not a usable GGUF file", p.stderr)
        self.assertEqual(self.files(), [])

    def test_a_server_that_ignores_range_starts_over(self):
        tiny = fixtures["tiny"]
        os.makedirs(os.path.join(self.store, "test/tiny-GGUF"))
        with open(tiny, "rb") as src, open(os.path.join(self.store, "test/tiny-GGUF/tiny-F32.gguf.part"), "wb") as dst:
            dst.write(src.read(1000))
        hub.ignore_range = True
        p = self.hearth("pull", "hf:test/tiny-GGUF/tiny-F32.gguf")
        self.assertIn("does not resume", p.stderr)
        self.assertEqual(sha256(os.path.join(self.store, "test/tiny-GGUF/tiny-F32.gguf")), sha256(tiny))


if __name__ == "__main__":
    unittest.main()
