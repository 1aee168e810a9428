"""A runtime that aborts says why in the entry's reason: the last lines it printed on stderr
(captured from the worker's fd 2, C's stderr), the op where it names one, and the step it died
in (from the worker's Python stack: allocate_tensors prepares the ops, invoke runs them).

Real aborts, made in the test:
- the field case: an int8 model whose SOFTMAX input has a degenerate scale (a Dense kernel
  scaled by 1e-9, so the calibrated range is ~1e-9: scale ~1e-11). TFLite's reference kernels
  abort in SOFTMAX's prepare (PreprocessSoftmaxScaling's check) and TFLite Micro in its
  CalculateSoftmaxParams; both call abort() and print nothing.
- a BIDIRECTIONAL_SEQUENCE_RNN whose auxiliary input has another number of time steps than its
  input (a flatbuffer built here): its prepare asserts, printing the assertion before abort().
"""

import importlib.util
import json
import re
import shutil

import keras
import numpy as np
import pytest
from conftest import needs
from mutations import add_entry
from tiny_bundle import by_id, convert, read_manifest, write_manifest

from edgepipe.device_tests.isolation import failing_op, last_words
from edgepipe.device_tests.runner import main, run_bundle

HAVE_TFLM = importlib.util.find_spec("tflite_micro") is not None
ABORT = "the interpreter crashed: killed by signal 6 (SIGABRT) while running this entry"
PREPARING = "(in allocate_tensors: the runtime was preparing the model's ops)"
ASSERTION = "aux_input->dims->data[0] didn't equal input->dims->data[0]"
PASSING = ["mlp-float32", "mlp-int8", "clf-float32", "clf-int8"]


def _birnn(aux_steps: int, steps: int = 2, units: int = 3, features: int = 4) -> bytes:
    """y = BIDIRECTIONAL_SEQUENCE_RNN(x) (time major, merged outputs) with a constant auxiliary
    input of `aux_steps` time steps: the kernel asserts it has as many as x (`steps`)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buffers, tensors = [schema.BufferT()], []

    def tensor(name, shape, data=None, variable=False):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.isVariable = name, shape, schema.TensorType.FLOAT32, variable
        t.buffer = 0
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = list(np.full(shape, data, np.float32).tobytes())
            buffers.append(buffer)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    x = tensor("x", [steps, 1, features])
    cell = [lambda d: tensor(f"{d}_weights", [units, features], 0.1),
            lambda d: tensor(f"{d}_recurrent", [units, units], 0.1),
            lambda d: tensor(f"{d}_bias", [units], 0.1),
            lambda d: tensor(f"{d}_hidden", [1, units], variable=True)]
    inputs = [x, *(make("fw") for make in cell), *(make("bw") for make in cell),
              tensor("aux", [aux_steps, 1, features], 0.1),
              tensor("fw_aux_weights", [units, features], 0.1),
              tensor("bw_aux_weights", [units, features], 0.1)]
    y = tensor("y", [steps, 1, 2 * units])
    options = schema.BidirectionalSequenceRNNOptionsT()
    options.timeMajor, options.mergeOutputs = True, True
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, inputs, [y]
    op.builtinOptionsType = schema.BuiltinOptions.BidirectionalSequenceRNNOptions
    op.builtinOptions = options
    graph = schema.SubGraphT()
    graph.name, graph.tensors, graph.inputs, graph.outputs, graph.operators = (
        "main", tensors, [x], [y], [op])
    code = schema.BuiltinOperator.BIDIRECTIONAL_SEQUENCE_RNN
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [graph], buffers
    model.operatorCodes = [schema.OperatorCodeT(deprecatedBuiltinCode=min(code, 127),
                                                builtinCode=code, version=1)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _degenerate_softmax(data) -> bytes:
    """A user's int8 classifier (6 features, 3 classes, int8 I/O as the tiny bundle's clf) whose
    SOFTMAX input spans ~1e-9: the Dense before it has its kernel scaled by 1e-9."""
    keras.utils.set_random_seed(0)
    dense = keras.layers.Dense(3)
    model = keras.Sequential([keras.Input((6,)), dense, keras.layers.Softmax()])
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 1e-9, np.zeros_like(bias)])
    return convert(model, "int8", data["cls"][0][:100])


@pytest.fixture(scope="module")
def aborting(tiny_bundle, tmp_path_factory):
    """The tiny bundle with `rnn` (the assertion) and `softmax` (the field case) added, between
    entries that pass."""
    root = tmp_path_factory.mktemp("aborting") / "bundle"
    shutil.copytree(tiny_bundle[0], root)
    manifest = read_manifest(root)
    add_entry(root, manifest, "rnn", "mlp_fixed-float32", _birnn(aux_steps=5))
    add_entry(root, manifest, "softmax", "clf-int8", _degenerate_softmax(tiny_bundle[2]))
    entries = manifest["entries"]
    entries[1:1] = [entries.pop(-2), entries.pop()]
    write_manifest(root, manifest)
    return root


@pytest.mark.parametrize("kernels", ["default", "reference"])
def test_an_assertion_that_aborts_is_quoted_with_the_step(aborting, kernels, capfd):
    records = by_id(run_bundle(aborting, kernels=kernels, only=["rnn", *PASSING]))
    rnn = records["rnn"]
    assert rnn["status"] == "error" and rnn["metrics"] is None
    assert rnn["reason"] == f'{ABORT} {PREPARING}; it printed on stderr: "{ASSERTION}"'
    assert all(records[i]["status"] == "pass" for i in PASSING), records
    stderr = capfd.readouterr().err
    assert stderr.count(ASSERTION) == 1  # still shown to the user, once
    assert "Fatal Python error" not in stderr  # the worker's stack dump is not (no --debug)
    assert "INFO: " not in stderr


def test_the_field_case_names_the_step_on_the_reference_kernels(aborting):
    """TFLite's reference kernels abort in SOFTMAX's prepare and print nothing: the reason says
    it was preparing the ops (the audit names the degenerate scale before anything runs)."""
    records = by_id(run_bundle(aborting, kernels="reference", only=["softmax", "clf-int8"]))
    assert records["softmax"]["reason"] == f"{ABORT} {PREPARING}"
    assert records["clf-int8"]["status"] == "pass"


def test_the_cli_prints_the_reason_and_hides_the_dump_unless_debug(aborting, tmp_path, capfd):
    out = tmp_path / "results.json"
    assert main([str(aborting), "--out", str(out), "--kernels", "reference", "--only", "rnn"]) == 1
    err = capfd.readouterr().err
    assert f'rnn: error {ABORT} {PREPARING}; it printed on stderr: "{ASSERTION}"' in err
    assert "Fatal Python error" not in err and "Traceback" not in err
    record = json.loads(out.read_text())["results"][0]
    assert ASSERTION in record["reason"]
    assert main([str(aborting), "--out", str(out), "--kernels", "reference", "--only", "rnn",
                 "--debug"]) == 1
    err = capfd.readouterr().err
    assert "Fatal Python error: Aborted" in err and "in allocate_tensors" in err


def test_tflm_says_the_signal_the_step_and_that_it_printed_nothing(aborting):
    needs(HAVE_TFLM, "tflite-micro is not installed (pip install 'edgepipe[micro]')")
    records = by_id(run_bundle(aborting, runtime="tflite_micro", only=["softmax"]))
    reason = records["softmax"]["reason"]
    assert re.fullmatch(r"tflite_micro \S+ failed to run the model with a \d+-byte arena "
                        r"\(exit -6\): killed by signal 6 \(SIGABRT\) while loading the model "
                        r"and preparing its ops; it printed nothing on stderr", reason), reason


def test_the_op_is_named_where_the_runtime_names_it():
    """Neither abort above names its op (a bare abort()); where a runtime does, in the words
    it uses when a prepare fails (here TFLite's own, from a real failed prepare), the reason
    names it."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=_birnn(aux_steps=2))
    interpreter.allocate_tensors()  # sound but for the aux input's length in `rnn` above
    interpreter.invoke()
    assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).shape == (2, 1, 6)
    interpreter.resize_tensor_input(0, [2, 1, 5])  # x's features no longer match the weights
    with pytest.raises(RuntimeError) as raised:
        interpreter.allocate_tensors()
    said = str(raised.value)
    assert "Node number 0 (BIDIRECTIONAL_SEQUENCE_RNN) failed to prepare" in said
    assert failing_op(said) == "BIDIRECTIONAL_SEQUENCE_RNN (node 0) failed to prepare"
    micro = ("tensorflow/lite/micro/kernels/softmax_common.cc:123 input->type == kTfLiteInt8 "
             "was not true.\nNode SOFTMAX (number 0f) failed to prepare with status 1\n")
    assert last_words(micro) == (
        '; SOFTMAX (node 0) failed to prepare; it printed on stderr: "tensorflow/lite/micro/'
        'kernels/softmax_common.cc:123 input->type == kTfLiteInt8 was not true. | Node SOFTMAX '
        '(number 0f) failed to prepare with status 1"')
    assert last_words("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n", "none") == "none"
