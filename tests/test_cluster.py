"""`--executor dask://HOST:PORT`: model jobs and host parity chunks on a Dask cluster.

Real components only, every address on 127.0.0.1: a Dask LocalCluster (a scheduler in this
process, worker processes with nannies) or `dask scheduler` / `dask worker` started as a user
would, and `edgepipe run` as a subprocess (the driver). The cluster must build what the local
executor builds (the same .tflite bytes, the same statuses), a job that kills its worker is
that model's error while the rest complete, and a worker with another edgepipe is refused.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import sshd  # its free_port: a loopback port nothing listens on
from test_incremental import statuses, tflite_hashes

distributed = pytest.importorskip(
    "distributed", reason="Dask distributed is not installed (pip install 'edgepipe[cluster]'; "
                          "make setup installs it)")

EDGEPIPE = str(Path(sys.executable).with_name("edgepipe"))
DASK = str(Path(sys.executable).with_name("dask"))

# A user's layer as tutorials write it; and one whose eager call kills the process it runs in
# (a segfault or the OOM killer, as far as the worker's nanny can tell).
LAYERS_PY = textwrap.dedent('''
    import os
    import signal

    import tensorflow as tf


    class Swishy(tf.keras.layers.Layer):
        def __init__(self, beta=1.0, **kwargs):
            super().__init__(**kwargs)
            self.beta = beta

        def call(self, x):
            return x * tf.sigmoid(self.beta * x)

        def get_config(self):
            return {**super().get_config(), "beta": self.beta}


    class Crash(tf.keras.layers.Layer):
        """Dies when called for real (loading the model traces it): its own process, or the
        one that started it, the cluster's worker, and then its own."""

        def __init__(self, whom="self", **kwargs):
            super().__init__(**kwargs)
            self.whom = whom

        def call(self, x):
            if tf.executing_eagerly():
                if self.whom == "worker":
                    os.kill(os.getppid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
            return tf.nn.relu(x)

        def get_config(self):
            return {**super().get_config(), "whom": self.whom}
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """layers.py, data.npz and small trained models: good.keras and also.keras (Swishy),
    crash.keras and crash_worker.keras (Crash)."""
    from conftest import import_as

    root = tmp_path_factory.mktemp("cluster_user")
    (root / "layers.py").write_text(LAYERS_PY)
    layers = import_as(root / "layers.py", "cluster_layers_under_test")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, :3].sum(1) > 0).astype(np.int64)
    np.savez(root / "data.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:],
             y_test=y[200:])
    keras.utils.set_random_seed(0)
    for name, act in (("good", layers.Swishy(1.0)), ("also", layers.Swishy(2.0)),
                      ("crash", layers.Crash()), ("crash_worker", layers.Crash("worker"))):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), act,
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x[:200], y[:200], epochs=5, verbose=0)
        model.save(root / f"{name}.keras")
    return root


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with one `tf` slot each. A job that kills its worker fails at the
    first death (Dask's default retries it on 3 more workers, each of which it kills)."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     resources={"tf": 1}, host="127.0.0.1",
                                     dashboard_address=":0") as local:
        yield local.scheduler_address.replace("tcp://", "dask://")


def edgepipe(*args, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEPIPE, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def user_run(user: Path, out: Path, models, *extra) -> subprocess.CompletedProcess:
    args = ["run", "--out", out, "--data", user / "data.npz", "--custom-objects",
            user / "layers.py", "--targets", "host,host-ref", "--no-repair", *extra]
    for name in models:
        args += ["--model", user / f"{name}.keras"]
    return edgepipe(*args, cwd=out.parent)


def test_user_models_on_the_cluster_equal_the_local_executor(user, cluster, tmp_path):
    """Inputs shipped by content (the models, their data, the custom objects), outputs written
    by the driver: the same .tflite bytes and statuses as `--executor local --jobs 1`."""
    modes = ("--config", _modes(tmp_path, ["float32", "float16", "int8"]))
    local = user_run(user, tmp_path / "local", ["good", "also"], "--jobs", "1", *modes)
    assert local.returncode in (0, 1), local.stderr
    remote = user_run(user, tmp_path / "remote", ["good", "also"], "--executor", cluster,
                      *modes)
    assert remote.returncode == local.returncode, remote.stderr
    assert f"building 2 models on {cluster}" in remote.stderr
    assert tflite_hashes(tmp_path / "remote") == tflite_hashes(tmp_path / "local")
    assert len(tflite_hashes(tmp_path / "local")) == 6
    assert statuses(tmp_path / "remote") == statuses(tmp_path / "local")
    # Every output a host runner saved came back and is where its record points.
    results = json.loads((tmp_path / "remote" / "results.json").read_text())["results"]
    assert results and all((tmp_path / "remote" / r["outputs"]).is_file() for r in results
                           if r.get("outputs"))
    # A second run on the cluster reuses everything: the keys made on the workers are the
    # driver's.
    again = user_run(user, tmp_path / "remote", ["good", "also"], "--executor", cluster, *modes)
    assert "reused 2 of 2 models" in again.stderr, again.stderr
    assert "building" not in again.stderr


def test_parity_chunks_on_the_cluster_equal_local_runners(user, cluster, tmp_path):
    """`edgepipe parity --executor`: the host and tflm runners on the workers, from the files
    shipped to them; the outputs they saved come back beside the results."""
    from conftest import needs

    needs(importlib.util.find_spec("tflite_micro") is not None,
          "tflite-micro is not installed (pip install 'edgepipe[micro]')")
    run = tmp_path / "run"
    built = user_run(user, run, ["good"], "--jobs", "1",
                     "--config", _modes(tmp_path, ["float32", "int8"]))
    assert built.returncode in (0, 1), built.stderr
    found = {}
    for how in ([], ["--executor", cluster]):
        done = edgepipe("parity", run, "--target", "host,tflm", "--jobs", "1", *how,
                        cwd=tmp_path)
        assert done.returncode in (0, 1), done.stderr
        results = json.loads((run / "results.json").read_text())["results"]
        found[bool(how)] = {(r["id"], r["target"]): (r["status"], r["metrics"].get("max_abs"))
                            for r in results if r["target"] in ("host", "tflm")}
        assert all((run / r["outputs"]).is_file() for r in results if r.get("outputs"))
    assert found[True] == found[False]
    assert {t for _, t in found[True]} == {"host", "tflm"}
    assert "parity chunk(s)" in done.stderr and "0 model job(s)" in done.stderr


def test_jobs_that_crash_are_their_models_errors_and_the_rest_complete(user, cluster,
                                                                      tmp_path):
    """One job dies of SIGKILL in its job process (a converter's segfault, as far as anyone can
    tell); another kills its worker (the out-of-memory killer's choice), which Dask gives up on
    (KilledWorker; this cluster allows no retry). Each is its model's error naming the signal,
    in the manifest and results.json; the good model completes and passes."""
    done = user_run(user, tmp_path / "run", ["good", "crash", "crash_worker"], "--executor",
                    cluster, "--config", _modes(tmp_path, ["float32"]))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    results = json.loads((run / "results.json").read_text())
    failed = results["failed_models"]
    assert sorted(failed) == ["crash", "crash_worker"]
    assert "its job process on " in failed["crash"], failed
    assert "was killed by SIGKILL (signal 9)" in failed["crash"], failed
    assert "its worker process was killed by SIGKILL (signal 9)" in failed["crash_worker"]
    assert "KilledWorker" in failed["crash_worker"], failed
    assert manifest["failed_models"] == failed
    assert list(manifest["models"]) == ["good"]
    assert results["summary"]["failed_models"] == 2 and not results["summary"]["ok"]
    assert not results["deployable"]["ok"]
    assert statuses(run) == {("good-float32", "host"): "pass",
                             ("good-float32", "host-ref"): "pass"}
    assert "crash: error: its job process on" in done.stderr
    assert "crash was not built" in (run / "report.html").read_text()


def _die(folder, how: int) -> None:
    """A parity chunk whose worker dies under it (the out-of-memory killer's signal)."""
    os.kill(os.getpid(), how)


def test_a_chunk_whose_worker_dies_is_a_job_failure_naming_the_signal(cluster, tmp_path):
    import cloudpickle

    from edgepipe.core.errors import JobFailed
    from edgepipe.pipeline.cluster import DaskExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    dask = DaskExecutor(cluster)
    try:
        done = dask.run_remote(_die, signal.SIGKILL, out=tmp_path)
    finally:
        dask.close()
    assert isinstance(done, JobFailed)
    assert done.startswith("its worker process was killed by SIGKILL (signal 9)"), done


def _modes(folder: Path, modes: list) -> Path:
    config = folder / "modes.toml"
    config.write_text(f"[run]\nmodes = {json.dumps(modes)}\n")
    return config


@pytest.fixture
def scheduler(tmp_path):
    """`dask scheduler` on a free loopback port, as a user starts it."""
    port = sshd.free_port()
    log = open(tmp_path / "scheduler.log", "wb")
    process = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                "--no-dashboard"], stdout=log, stderr=log)
    try:
        _wait_for(lambda: b"Scheduler at:" in (tmp_path / "scheduler.log").read_bytes(),
                  "the scheduler", tmp_path / "scheduler.log")
        yield port
    finally:
        _stop(process)
        log.close()


def test_a_worker_with_another_edgepipe_is_refused(scheduler, tmp_path):
    """A worker whose Python finds another edgepipe (here: an install's metadata that says
    0.0.1 first on its path) is refused at connect, in one line naming both versions."""
    fake = tmp_path / "other"
    (fake / "edgepipe-0.0.1.dist-info").mkdir(parents=True)
    (fake / "edgepipe-0.0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: edgepipe\nVersion: 0.0.1\n")
    done = _run_beside_a_worker(scheduler, tmp_path, ["--resources", "tf=1"],
                                {**os.environ, "PYTHONPATH": str(fake)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: The Dask worker tcp://127.0.0.1:"), \
        done.stderr
    assert "runs edgepipe 0.0.1 (source" in lines[0] and "this driver edgepipe 0.1.0" in lines[0]
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_workers_without_the_tf_resource_are_refused(scheduler, tmp_path):
    done = _run_beside_a_worker(scheduler, tmp_path, [], None)
    assert done.returncode == 2, done.stderr
    assert "offers the resource 'tf'" in done.stderr and "--resources tf=1" in done.stderr


def _run_beside_a_worker(port: int, tmp_path: Path, options: list, env):
    """`edgepipe run --executor` against the scheduler with one `dask worker` (these options,
    this environment) registered to it."""
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([DASK, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                               *options, "--no-dashboard"], stdout=log, stderr=log, env=env)
    try:
        _wait_for(lambda: b"Registered to" in (tmp_path / "worker.log").read_bytes(),
                  "the worker", tmp_path / "worker.log")
        return edgepipe("run", "--out", tmp_path / "run", "--executor",
                        f"dask://127.0.0.1:{port}", cwd=tmp_path, timeout=300)
    finally:
        _stop(worker)
        log.close()


def _wait_for(condition, what: str, log: Path, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # dask's own clean shutdown
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_the_zoo_on_the_cluster_equals_the_local_executor(cluster, tmp_path):
    """Training, conversion, bundle and a repair (mlp_step int8) on the cluster's workers."""
    config = tmp_path / "zoo.toml"
    config.write_text('[run]\nmodels = ["mlp_swish", "mlp_step"]\nmodes = ["float32", '
                      '"int8"]\nepochs = 3\n')
    local = edgepipe("run", "--config", config, "--out", tmp_path / "local", "--jobs", "1",
                     cwd=tmp_path)
    remote = edgepipe("run", "--config", config, "--out", tmp_path / "remote", "--executor",
                      cluster, cwd=tmp_path)
    assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
    assert tflite_hashes(tmp_path / "remote") == tflite_hashes(tmp_path / "local")
    assert any(".i16." in name or ".f32." in name for name in tflite_hashes(tmp_path / "remote"))
    assert statuses(tmp_path / "remote") == statuses(tmp_path / "local")


@pytest.mark.slow
def test_a_driver_killed_mid_run_leaves_every_file_whole(cluster, tmp_path):
    """The driver is the only writer, through `.partial/`-then-rename: killed at any point
    (SIGKILL, then SIGINT) while the cluster works, it leaves every file whole, and the next
    run on the cluster completes with the bytes of a run never interrupted."""
    from test_interrupts import CONFIG, assert_whole

    config = tmp_path / "run.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    command = [EDGEPIPE, "run", "--config", str(config), "--out", str(out), "--executor", cluster]
    for at, sig in ((6.0, signal.SIGKILL), (12.0, signal.SIGINT), (3.0, signal.SIGKILL)):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        time.sleep(at)
        if process.poll() is None:
            os.killpg(process.pid, sig)
        _, stderr = process.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr[-2000:]
        assert_whole(out)
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert_whole(out)
    clean = edgepipe("run", "--config", config, "--out", tmp_path / "clean", "--jobs", "1",
                     cwd=tmp_path)
    assert clean.returncode == done.returncode, clean.stderr[-3000:]
    assert tflite_hashes(out) == tflite_hashes(tmp_path / "clean")
    assert statuses(out) == statuses(tmp_path / "clean")


@pytest.mark.slow
def test_a_tls_cluster_through_dasks_own_security_settings(user, tmp_path):
    """README's TLS note: a scheduler and a worker that speak only TLS (Dask's configuration, by
    environment variables here), a driver with the same settings runs; one without is refused
    in one line."""
    import shutil

    from conftest import needs

    needs(shutil.which("openssl") is not None,
          "openssl is not installed (apt-get install openssl): it makes the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    tls = {"DASK_DISTRIBUTED__COMM__DEFAULT_SCHEME": "tls",
           "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
           "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert)}
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        tls[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = str(cert)
        tls[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = str(key)
    env = {**os.environ, **tls}
    port = sshd.free_port()
    logs = [open(tmp_path / f"{name}.log", "wb") for name in ("scheduler", "worker")]
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--no-dashboard"], stdout=logs[0], stderr=logs[0], env=env)
    worker = subprocess.Popen([DASK, "worker", f"tls://127.0.0.1:{port}", "--nthreads", "1",
                               "--resources", "tf=1", "--no-dashboard"], stdout=logs[1],
                              stderr=logs[1], env=env)
    try:
        _wait_for(lambda: b"Registered to" in (tmp_path / "worker.log").read_bytes(),
                  "the TLS worker", tmp_path / "worker.log")
        args = ["run", "--out", tmp_path / "run", "--data", user / "data.npz",
                "--custom-objects", user / "layers.py", "--model", user / "good.keras",
                "--config", _modes(tmp_path, ["float32"]), "--executor",
                f"dask://127.0.0.1:{port}"]
        plain = subprocess.run([EDGEPIPE, *map(str, args)], capture_output=True, text=True,
                               timeout=300)
        done = subprocess.run([EDGEPIPE, *map(str, args)], capture_output=True, text=True,
                              timeout=600, env=env)
    finally:
        for process in (worker, scheduler):
            _stop(process)
        for log in logs:
            log.close()
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert "Cannot reach the Dask scheduler" in plain.stderr
    assert done.returncode == 0, done.stderr
    assert f"cluster on dask://127.0.0.1:{port}: 1 model job(s)" in done.stderr
