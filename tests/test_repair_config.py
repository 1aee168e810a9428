"""The [repair] table of the run config and --no-repair: defaults, per-model settings, and
bad values refused in one line before any work; what a target's refusal names."""

import pytest

from edgepipe.core.errors import EdgepipeError
from edgepipe.pipeline.config import load_config
from edgepipe.pipeline.repair import refused_ops


def test_repair_is_on_by_default_with_a_budget_of_eight():
    settings = load_config(None).repair_for("mlp_step")
    assert settings.enabled and settings.max_conversions == 8
    assert settings.precisions == ("int16", "float32")


def test_per_model_settings_override_the_table_and_no_repair_overrides_both(tmp_path):
    path = tmp_path / "edgepipe.toml"
    path.write_text('[repair]\nmax_conversions = 3\n'
                    '[repair.mlp_step]\nprecisions = ["float32"]\nmax_conversions = 5\n')
    config = load_config(path)
    assert config.repair_for("mlp_step").precisions == ("float32",)
    assert config.repair_for("mlp_step").max_conversions == 5
    assert config.repair_for("cnn_step").max_conversions == 3
    assert config.repair_for("cnn_step").precisions == ("int16", "float32")
    off = load_config(path, no_repair=True)
    assert not off.repair_for("mlp_step").enabled and not off.repair_for("cnn_step").enabled


@pytest.mark.parametrize("text, message", [
    pytest.param('[repair]\nmax_conversion = 3\n', "Did you mean 'max_conversions'?", id="key"),
    pytest.param('[repair]\nmax_conversions = 0\n', "Expected max_conversions in C [repair] to "
                 "be a whole number >= 1. Received: 0.", id="budget"),
    pytest.param('[repair]\nprecisions = ["int4"]\n', 'Expected precisions in C [repair] to be '
                 'a non-empty list of distinct precisions among "int16", "float32"',
                 id="precision"),
    pytest.param('[repair]\nenabled = "yes"\n', "Expected enabled in C [repair] to be true or "
                 "false", id="flag"),
    pytest.param('[repair.mlp_stepp]\nenabled = false\n', "Unknown model 'mlp_stepp'",
                 id="model"),
    pytest.param('[repair.mlp_step]\nbudget = 2\n', "Unknown key 'budget' in C "
                 "[repair.mlp_step]", id="model-key"),
])
def test_bad_repair_settings_are_one_line(tmp_path, text, message):
    path = tmp_path / "edgepipe.toml"
    path.write_text(text)
    with pytest.raises(EdgepipeError) as caught:
        load_config(path)
    said = str(caught.value).replace(str(path), "C")
    assert message in said and "\n" not in said


@pytest.mark.parametrize("reason, ops", [
    ("TFLite Micro has no kernel for GELU", ["GELU"]),
    ("TFLite Micro's EXP kernel refuses this model (Type INT8 (9) not supported.)", ["EXP"]),
    ("tflm runs integer-only int8 models; op 3 SIGN computes in float (float32, int8)",
     ["SIGN"]),
    ("ai_edge_litert 2.3.0 (reference kernels) has no kernel for custom op MyOp", []),
    ("INT8 AND FLOAT are not ops", []),
])
def test_the_ops_a_refusal_names(reason, ops):
    assert refused_ops(reason) == ops


def test_a_repaired_entry_must_name_the_entry_it_repairs(tiny_bundle, tmp_path):
    import shutil

    from tiny_bundle import read_manifest, write_manifest

    from edgepipe.device_tests.bundle import BundleError, load_bundle

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[0], root)
    manifest = read_manifest(root)
    first = manifest["entries"][0]
    made = {**first, "id": first["id"] + ".f32.dense",
            "repair": {"of": first["id"], "label": f"{first['mode']}+f32[dense]"}}
    manifest["entries"].append(made)
    manifest["repairs"] = [{"of": first["id"], "ok": True, "tries": []}]
    write_manifest(root, manifest)
    load_bundle(root)  # well formed
    made["repair"]["of"] = "no-such-entry"
    write_manifest(root, manifest)
    with pytest.raises(BundleError, match=r"repair\.of must be the id of an entry of this "
                                          r"manifest\. Received: \"no-such-entry\""):
        load_bundle(root)
