"""Malformed manifests and unsafe output folders, for the parity runner on its own (as a board
runs it) and for `edgepipe parity` on a run folder: every manifest field is checked when the
bundle is read (device_tests/bundle.py), one line and exit 2 before any entry runs."""

import json

from bad_inputs import Case

BUNDLE_RUN = ("bundle", "--out", "out/results.json", "--save-outputs")
PARITY = ("parity", "run", "--target", "host")
BOUNDARY = {"kink": 0.0, "layers": ["step_1"], "preact": ["reference/mlp.npy"],
            "preact_sha256": ["0" * 64], "input_steps": {"int8": [0.1]}}


def _edited(where: str, edit=None, text: str | None = None):
    """A copy of the tiny bundle ("bundle") or of a finished run ("run") whose manifest.json is
    `edit`ed (a function of the parsed manifest; a value "INF" is then written as 1e999, which
    JSON readers take as infinity) or replaced by `text`."""

    def setup(folder):
        root = folder.bundle() if where == "bundle" else folder.run_folder()
        path = root / "manifest.json"
        if edit is not None:
            manifest = json.loads(path.read_text())
            edit(manifest)
            text_out = json.dumps(manifest, indent=1).replace('"INF"', "1e999")
        else:
            text_out = text
        path.write_text(text_out)

    return setup


def _set(key_path: str, value):
    """An edit that puts `value` at a dotted path of the manifest (numbers index lists)."""

    def edit(manifest):
        *parents, last = [int(k) if k.isdigit() else k for k in key_path.split(".")]
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


def _runner(id: str, what: str, expect: str, edit=None, text=None) -> Case:
    return Case(f"runner-{id}", what, BUNDLE_RUN, 2, expect, _edited("bundle", edit, text),
                tool="runner")


def _parity(id: str, what: str, expect: str, edit=None, text=None) -> Case:
    return Case(f"manifest-{id}", what, PARITY, 2, expect, _edited("run", edit, text))


def _linked_outputs(rel: str):
    """The tiny bundle, and an --out folder whose `rel` links to the victim folder."""

    def setup(folder):
        folder.bundle()
        (folder.path / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
        folder.link(f"out/{rel}", folder.victim)

    return setup


def _out_folder(folder):
    folder.bundle()
    (folder.path / "out").mkdir()


CASES = [
    _runner("manifest-nul-in-path", "a NUL character in an entry's tflite path",
            "(mlp-float32).tflite = \"tflite/mlp\\u0000.tflite\" holds a NUL character",
            _set("entries.0.tflite", "tflite/mlp\x00.tflite")),
    _runner("manifest-nested-100000", "manifest.json nested 100,000 lists deep",
            "not valid JSON (lists or objects nest too deeply to read)",
            text="[" * 100_000 + "]" * 100_000),
    _runner("manifest-nested-40", "a manifest field nested 40 lists deep",
            "lists and objects nest more than 32 levels deep",
            _set("versions", {"python": json.loads("[" * 40 + "]" * 40)})),
    _runner("manifest-boundary-not-object", "a model's `boundary` that is a number",
            "models.mlp.boundary must be a JSON object. Received: 5",
            _set("models.mlp.boundary", 5)),
    _runner("manifest-preact-not-list", "a model's `boundary.preact` that is a number",
            "models.mlp.boundary.preact must be a JSON list. Received: 5",
            _set("models.mlp.boundary", {**BOUNDARY, "preact": 5})),
    _runner("manifest-mode-unknown", "an entry whose mode is `int4`",
            "mode must be one of float32, float16, dynamic, int8, int16x8. Received: \"int4\"",
            _set("entries.1.mode", "int4")),
    _runner("manifest-nan", "a bare NaN as a tolerance bound (not JSON)",
            "not valid JSON (NaN is not JSON (a number must be finite))",
            text='{"schema_version": 1, "entries": [{"tolerance": {"max_abs": NaN}}]}'),
    _runner("manifest-infinity", "a bound written 1e999 (JSON readers make it infinity)",
            "tolerance.max_abs must be a finite number. Received: inf",
            _set("entries.0.tolerance.max_abs", "INF")),
    _runner("manifest-bytes-huge", "an entry's `bytes` of 10^30",
            "bytes must be a whole number from 0 to 2**63 - 1",
            _set("entries.0.bytes", 10 ** 30)),
    _runner("manifest-entry-not-object", "an entry that is a list",
            "entries[0] must be a JSON object. Received: [1]", _set("entries.0", [1])),
    _runner("manifest-id-number", "an entry id that is a number",
            "entries[0].id must be a string. Received: 7", _set("entries.0.id", 7)),
    _runner("manifest-lone-surrogate", "a `\\ud800` escape (not Unicode text) in a path",
            "entries[0].tflite holds \"tflite/\\ud800.tflite\", a lone surrogate",
            _set("entries.0.tflite", "tflite/\ud800.tflite")),
    _runner("manifest-top-level-list", "manifest.json holding a list",
            "the top level must be a JSON object. Received: []", text="[]"),
    _runner("manifest-tolerance-string", "an entry's tolerance that is a string",
            "(mlp-float32).tolerance must be a JSON object. Received: \"0.1\"",
            _set("entries.0.tolerance", "0.1")),
    _runner("manifest-status-unknown", "an entry whose status is `passed`",
            "status must be one of converted, unsupported, failed. Received: \"passed\"",
            _set("entries.0.status", "passed")),
    Case("runner-out-is-a-folder", "an existing folder as the runner's --out", BUNDLE_RUN[:1]
         + ("--out", "out", "--save-outputs"), 2, "--out out is a folder; give the path of the "
         "results file", _out_folder, tool="runner"),
    Case("runner-outputs-link", "the --out folder's outputs/ links to a folder of the user's",
         BUNDLE_RUN, 2, "out/outputs is a symbolic link", _linked_outputs("outputs"),
         tool="runner"),
    Case("runner-outputs-target-link", "the --out folder's outputs/host links out",
         BUNDLE_RUN, 2, "out/outputs/host is a symbolic link", _linked_outputs("outputs/host"),
         tool="runner"),
    _parity("parity-entries-not-list", "`entries` that is a number",
            "run/manifest.json: entries must be a JSON list. Received: 5",
            _set("entries", 5)),
    _parity("parity-entry-not-object", "an entry that is a string",
            "run/manifest.json: entries[2] must be a JSON object. Received: \"mlp\"",
            _set("entries.2", "mlp")),
    _parity("parity-boundary-not-object", "a model's `boundary` that is a list",
            "models.clf.boundary must be a JSON object. Received: []",
            _set("models.clf.boundary", [])),
    _parity("parity-mode-unknown", "an entry whose mode is `int4`",
            "entries[1] (mlp-int8).mode must be one of float32", _set("entries.1.mode", "int4")),
    _parity("parity-tolerance-string", "an entry's tolerance that is a string",
            "(clf-int8).tolerance must be a JSON object", _set("entries.5.tolerance", "tight")),
    _parity("parity-tolerance-unknown-key", "a misspelt tolerance bound",
            "tolerance has an unknown key 'max_abs_err' (did you mean 'max_abs'?)",
            _set("entries.0.tolerance.max_abs_err", 0.1)),
    _parity("parity-model-unknown", "an entry naming a model not in `models`",
            "entries[0] (mlp-float32).model must be a key of 'models' (mlp, mlp_fixed, clf)",
            _set("entries.0.model", "mlp_swish")),
    _parity("parity-dataset-not-object", "a dataset that is a string",
            "datasets.reg must be a JSON object. Received: \"data/reg.npz\"",
            _set("datasets.reg", "data/reg.npz")),
    _parity("parity-models-missing", "a manifest without `models`",
            "models must be a JSON object. Received: null",
            lambda manifest: manifest.pop("models")),
    _parity("parity-sha256-number", "an entry's sha256 that is a number",
            "(mlp-float32).sha256 must be a sha256 (64 hexadecimal digits). Received: 0",
            _set("entries.0.sha256", 0)),
    _parity("parity-samples-string", "a dataset's samples as a string",
            "datasets.cls.samples must be a whole number from 1 to 2**63 - 1. Received: \"60\"",
            _set("datasets.cls.samples", "60")),
    _parity("parity-schema-version-string", "schema_version written as a string",
            "schema_version \"1\" is not supported", _set("schema_version", "1")),
    _parity("parity-truncated", "a manifest.json cut short (a copy that stopped half way)",
            "run/manifest.json: not valid JSON (Unterminated string",
            text='{"schema_version": 1, "ent'),
    _parity("parity-nan", "a bare NaN in a dataset's y_std",
            "NaN is not JSON (a number must be finite)",
            text='{"schema_version": 1, "datasets": {"reg": {"y_std": NaN}}}'),
    _parity("parity-nested-100000", "manifest.json nested 100,000 objects deep",
            "not valid JSON (lists or objects nest too deeply to read)",
            text='{"a": ' * 100_000 + "1" + "}" * 100_000),
    _parity("parity-path-nul", "a NUL character in a dataset's inputs path",
            "datasets.reg.inputs = \"data/reg\\u0000.npy\" holds a NUL character",
            _set("datasets.reg.inputs", "data/reg\x00.npy")),
    _parity("parity-path-outside", "a reference path that leaves the run folder",
            "models.mlp.reference = \"../victim/a.npy\" contains '..'",
            _set("models.mlp.reference", "../victim/a.npy")),
]
