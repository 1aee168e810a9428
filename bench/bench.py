"""`make bench`: edgepipe's speed figures, each a ratio to a baseline measured in the same run.

Machines are shared and noisy, so an absolute time means little; its ratio to a baseline timed
minutes apart on the same machine (the hand-written script, importing TensorFlow, a cold run)
does. Sections: `edgepipe run --targets host` at `--jobs 1` and at the default jobs vs the
hand-written script (bench/handwritten.py) on the same zoo, warm vs cold, peak RSS; a cold run on
2 local Dask workers vs the local one, with the bytes that crossed the network and the per-job
costs that docs/scale.md builds its estimate on; CLI start vs `import tensorflow`; each target's
parity wall time vs the sum of its invoke() times; int8 vs float32; a pool of 3 loopback ssh
boards vs 1 (`edgepipe parity --target pool:NAME`). Progress goes to stderr, the table to
stdout, raw figures and ratios to bench/results.json.

    python -m bench.bench [--quick] [--run DIR] [--repeats N] [--rounds N] [--out PATH] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from edgepipe.device_tests.schema import (
    ConversionStatus,
    RunFolder,
    count_statuses,
    outputs_dir,
)
from edgepipe.pipeline import workers
from edgepipe.pipeline.targets.pool import CHUNKS_PER_BOARD

REPO = Path(__file__).resolve().parents[1]
BENCH_SCHEMA_VERSION = 1  # bench/results.json's own
PACKAGES = ("tensorflow-cpu", "tensorflow", "ai-edge-litert", "numpy", "keras")
IMPORT_TF = "import tensorflow"
QUICK = {"models": ["mlp_swish", "cnn_swish"], "modes": ["float32", "int8"], "epochs": 3}
QUICK_CONFIG = "[run]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in QUICK.items())
QUICK_ARGS = tuple(a for k, v in QUICK.items()
                   for a in (f"--{k}", ",".join(v) if isinstance(v, list) else str(v)))


class BenchError(Exception):
    """A command the bench needs failed; the message says which and shows its output."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def figure(section: str, name: str, value: float, baseline: float, baseline_name: str,
           unit: str, at_most=None, at_least=None, ratio=None, note: str = "", **extra) -> dict:
    """One row: the raw value, its baseline, their ratio (or a given one, for medians of
    ratios), the target when there is one, and whether it is met."""
    if ratio is None:
        ratio = value / baseline if baseline > 0 else None
    target, meets = None, None
    if at_most is not None:
        target, meets = f"<= {at_most:g}", ratio is not None and ratio <= at_most
    elif at_least is not None:
        target, meets = f">= {at_least:g}", ratio is not None and ratio >= at_least
    return {"section": section, "name": name, "value": value, "baseline": baseline,
            "baseline_name": baseline_name, "unit": unit, "ratio": ratio, "target": target,
            "meets": meets, "note": note, **extra}


def quantity(value: float, unit: str) -> str:
    if unit == "KB":
        return f"{value / 1024:.0f} MiB"
    if unit == "bytes":
        return f"{value / 1024:.1f} KiB"
    return f"{value:.4g} {unit}"


def table(figures: list[dict]) -> str:
    """The figures as a fixed-width text table, one row each."""
    head = ("section", "figure", "value", "baseline", "ratio", "target", "note")
    rows = [head] + [(f["section"], f["name"], quantity(f["value"], f["unit"]),
                      f"{quantity(f['baseline'], f['unit'])} ({f['baseline_name']})",
                      "n/a" if f["ratio"] is None else f"{f['ratio']:.3g}",
                      "" if f["target"] is None else
                      f"{f['target']} {'ok' if f['meets'] else 'MISSED'}", f["note"])
                     for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def median_row(section: str, name: str, rows: list[dict], **kwargs) -> dict:
    """The median of the rows' ratios (beside the medians of their values and baselines);
    `kwargs` go to figure()."""
    return figure(section, name, statistics.median(r["value"] for r in rows),
                  statistics.median(r["baseline"] for r in rows), rows[0]["baseline_name"],
                  rows[0]["unit"], ratio=statistics.median(r["ratio"] for r in rows), **kwargs)


# --- processes: wall time and peak RSS --------------------------------------------------------

def _own_peak_kb(pid: int) -> int:
    """VmHWM: the peak RSS of this one process so far (KB), 0 once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(ln.split()[1]) for ln in lines if ln.startswith("VmHWM:")), 0)


# Runs argv[2:] as its child; writes the child's pid, then its wall time, wait4 rusage peak and
# exit code, to argv[1]. Why a launcher: on Linux a process's ru_maxrss starts at the peak RSS
# of the image its exec replaced, so a command started straight from a big process (pytest with
# TensorFlow loaded) reports at least that process's peak. Forked from this small launcher, it
# does not.
_LAUNCHER = """import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
with open(sys.argv[1], "w") as f:
    f.write(f"{pid}\\n")
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "a") as f:
    f.write(f"{time.perf_counter() - start} {usage.ru_maxrss} "
            f"{os.waitstatus_to_exitcode(status)}\\n")
"""


def measure(cmd: list[str], log_path: Path, poll: float = 0.0, ok=(0,), env=None) -> dict:
    """Wall time, exit code and peak RSS (KB) of `cmd` and its process tree.

    wait4's rusage gives the exact peak of the tree: the largest single process among the
    command and the descendants it reaped (ru_maxrss is a max, not a sum). With `poll`, the
    command's own peak is read every `poll` seconds: when it falls short of the tree's, the
    largest process was a worker. Output goes to `log_path`; an exit code not in `ok` raises
    BenchError with the output's tail. `env`: variables added to this process's."""
    report = log_path.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    main_kb = 0
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report), *cmd],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env} if env else None)
        while poll and proc.poll() is None:
            lines = report.read_text().splitlines() if report.exists() else []
            if lines:
                main_kb = max(main_kb, _own_peak_kb(int(lines[0])))
            time.sleep(poll)
        proc.wait()
    seconds, peak_kb, code = report.read_text().splitlines()[1].split()
    result = {"seconds": float(seconds), "returncode": int(code), "peak_rss_kb": int(peak_kb)}
    if poll:
        # The last `poll` seconds of the command are unseen: allow 2 % of growth there.
        result["largest_process"] = ("main process" if main_kb >= 0.98 * int(peak_kb)
                                     else "a worker (child) process")
        result["main_process_peak_rss_kb"] = main_kb
    if result["returncode"] not in ok:
        tail = log_path.read_text(errors="replace")[-2000:]
        hint = ("\n(this edgepipe has no --jobs/--force yet: bench a run folder with --run DIR)"
                if "No such option" in tail else "")
        raise BenchError(f"{' '.join(cmd)} exited {result['returncode']}:\n{tail}{hint}")
    return result


# --- section 1: CLI start ---------------------------------------------------------------------

def cli_start(edgepipe: str, run_dir: Path, tflite: Path, repeats: int,
              work: Path) -> tuple[dict, list]:
    """Median wall time of each light command vs `python -c 'import tensorflow'`, interleaved so
    that a noisy minute hits every command alike."""
    commands = {IMPORT_TF: [sys.executable, "-c", IMPORT_TF],
                "edgepipe --help": [edgepipe, "--help"],
                "edgepipe targets": [edgepipe, "targets"],
                "edgepipe report RUN": [edgepipe, "report", str(run_dir)],
                "edgepipe check X.tflite": [edgepipe, "check", str(tflite)]}
    raw = {name: {"seconds": [], "peak_rss_kb": []} for name in commands}
    for i in range(repeats):
        log(f"cli start {i + 1}/{repeats}")
        for name, cmd in commands.items():
            result = measure(cmd, work / "cli.log")
            raw[name]["seconds"].append(result["seconds"])
            raw[name]["peak_rss_kb"].append(result["peak_rss_kb"])
    base = statistics.median(raw[IMPORT_TF]["seconds"])
    figures = [figure("cli start", name, statistics.median(raw[name]["seconds"]), base,
                      IMPORT_TF, "s", at_most=0.15) for name in commands if name != IMPORT_TF]
    return {"repeats": repeats, "raw": raw}, figures


# --- sections 2 and 3: the hand-written script, cold, warm and parallel runs -----------------

def _tflite_hashes(run_dir: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(RunFolder(run_dir).tflite_dir.glob("*.tflite"))}


def _statuses(run_dir: Path) -> dict:
    results = json.loads(RunFolder(run_dir).results.read_text())["results"]
    return {f"{r['id']} {r['target']}": r["status"] for r in results}


def runs(edgepipe: str, work: Path, config: Path | None,
         rounds: int) -> tuple[dict, list, Path]:
    """The hand-written script (bench/handwritten.py) and `edgepipe run --targets host` on the
    same zoo: cold `--jobs 1 --force`, the same command again without --force (warm, once), then
    cold at the default jobs (one per core) elsewhere. --force keeps a cold run cold whatever
    caches exist. The three cold commands run `rounds` times, interleaved, and each figure takes
    each command's fastest: this shared machine's speed drifts by tens of percent over minutes,
    and a round takes about 5. `config`: the quick bench's (QUICK), else the default zoo."""
    default_jobs = workers.default_jobs()  # what `edgepipe run` takes without --jobs

    def run(name: str, folder: str, jobs: int | None, force: bool) -> dict:
        cmd = [edgepipe, "run", "--out", str(work / folder), "--targets", "host"]
        cmd += (["--jobs", str(jobs)] if jobs else []) + (["--force"] if force else [])
        cmd += ["--config", str(config)] if config else []
        log(f"{name}: edgepipe {' '.join(cmd[1:])}")
        # Exit 1 is a failed parity check (the default zoo has one, mlp_step int8): a result.
        return measure(cmd, work / f"{name}.log", poll=0.2, ok=(0, 1))

    args = QUICK_ARGS if config else ()
    one, many = work / "jobs1", work / "jobs-default"
    timed = {"handwritten": [], "cold": [], "cold_default_jobs": []}
    same_rounds = True  # every round's --jobs 1 .tflite files and statuses equal the first's
    for k in range(rounds):
        log(f"round {k + 1} of {rounds}: hand-written: python -m bench.handwritten "
            f"{' '.join(args)}")
        timed["handwritten"].append(measure(
            [sys.executable, "-m", "bench.handwritten", *args], work / "handwritten.log",
            poll=0.2))
        timed["cold"].append(run("cold", "jobs1", 1, True))
        if k == 0:
            cold_statuses, cold_hashes = _statuses(one), _tflite_hashes(one)
            warm = run("warm", "jobs1", 1, False)
            warm_same = _statuses(one) == cold_statuses
        else:
            same_rounds &= (_statuses(one), _tflite_hashes(one)) == (cold_statuses, cold_hashes)
        timed["cold_default_jobs"].append(run("cold-default-jobs", "jobs-default", None, True))
    script, cold, cold_n = (min(timed[name], key=lambda r: r["seconds"]) for name in timed)
    # Once: unlike a time, the peak RSS of an import hardly moves between runs.
    tf_rss = measure([sys.executable, "-c", IMPORT_TF], work / "tf.log")["peak_rss_kb"]
    same = {"tflite": _tflite_hashes(one) == _tflite_hashes(many),
            "statuses": _statuses(one) == _statuses(many)}
    info = {"handwritten": script, "cold": cold, "warm": warm, "cold_default_jobs": cold_n,
            "rounds": rounds, "seconds_by_round": {
                name: [r["seconds"] for r in results] for name, results in timed.items()},
            "rounds_identical": same_rounds,
            "default_jobs": default_jobs, "import_tensorflow_rss_kb": tf_rss,
            "tflite_sha256": _tflite_hashes(one), "default_jobs_identical": same,
            "warm_statuses_identical": warm_same, "job_seconds": job_seconds(
                (work / "cold.log").read_text(errors="replace"))}
    jobs_n = f"--jobs {default_jobs} (default)"
    def times(name: str) -> str:
        return ", ".join(f"{t:.1f}" for t in info["seconds_by_round"][name]) + " s"

    several = rounds > 1  # then the notes give every round's time
    figures = [figure("runs", "cold run, --jobs 1", cold["seconds"], script["seconds"],
                      "hand-written script", "s", at_most=1.05,
                      note="edgepipe run --targets host --force" + (
                          f"; fastest of {times('cold')}; script {times('handwritten')}"
                          if several else "")),
               figure("runs", f"cold run, {jobs_n}", cold_n["seconds"], script["seconds"],
                      "hand-written script", "s", at_most=0.6,
                      note=f"fastest of {times('cold_default_jobs')}" if several else ""),
               figure("runs", f"speedup, {jobs_n}", cold["seconds"], cold_n["seconds"],
                      f"cold, {jobs_n}", "s", at_least=1.8 if default_jobs == 2 else None,
                      identical=same, note=f".tflite {'identical' if same['tflite'] else 'DIFFER'}"
                      f"; statuses {'identical' if same['statuses'] else 'DIFFER'}"
                      + ("" if same_rounds else "; --jobs 1 rounds DIFFER")),
               figure("runs", "warm run", warm["seconds"], cold["seconds"], "cold, --jobs 1",
                      "s", at_most=0.15, note="statuses " +
                      ("identical" if warm_same else "DIFFER") + " to the cold run's")]
    for name, result in (("--jobs 1", cold), (jobs_n, cold_n)):
        figures.append(figure(
            "runs", f"cold run peak RSS, {name}", result["peak_rss_kb"], tf_rss,
            IMPORT_TF, "KB", largest_process=result["largest_process"],
            main_process_peak_rss_kb=result["main_process_peak_rss_kb"],
            note=f"largest: {result['largest_process']} (main: "
                 f"{result['main_process_peak_rss_kb'] / 1024:.0f} MiB)"))
    figures.append(figure("runs", "hand-written script peak RSS", script["peak_rss_kb"], tf_rss,
                          IMPORT_TF, "KB"))
    return info, figures, one


# --- section 4: each target's parity against its invoke floor ------------------------------

PARITY_TARGETS = ("host", "host-ref", "tflm", "qemu-aarch64")


def target_parity(edgepipe: str, run_dir: Path, work: Path) -> tuple[dict, list]:
    """`edgepipe parity RUN --target T` on a copy of the run folder without results, per target
    ready here: its wall time against the sum of the invoke() times its runners recorded (the
    physical floor: the kernels' own time). What lies between is start-up, loading, the arena
    search, metrics and writing."""
    from edgepipe.pipeline.targets import get_target

    info, figures = {}, []
    for target in PARITY_TARGETS:
        why = get_target(target).availability()
        if why:
            info[target] = {"skipped": why}
            continue
        folder = work / f"parity-{target}"
        shutil.copytree(run_dir, folder)
        shutil.rmtree(RunFolder(folder).results_dir)
        RunFolder(folder).stages.unlink()  # every entry runs again
        log(f"parity: edgepipe parity RUN --target {target}")
        done = measure([edgepipe, "parity", str(folder), "--target", target],
                       work / f"parity-{target}.log", ok=(0, 1))
        records = json.loads(RunFolder(folder).target_results(target).read_text())["results"]
        floor = sum(r.get("invoke_seconds") or 0.0 for r in records)
        counts = count_statuses(records)
        info[target] = {**done, "entries": len(records), "invoke_seconds": floor,
                        "statuses": counts}
        said = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        figures.append(figure("target parity", target, done["seconds"], floor,
                              "sum of invoke() times", "s", note=f"{len(records)} entries: {said}"))
        shutil.rmtree(folder)
    return info, figures


# --- section 5: a user's model of real size ----------------------------------------------------

def user_model(work: Path, quick: bool) -> tuple[dict, list]:
    """`edgepipe run --model` on a MobileNetV3Small (bench/mobilenet.py): its bundle stage
    against its convert stage. Not in --quick (it trains the model first: a few minutes)."""
    if quick:
        return {"skipped": "--quick"}, []
    from bench import mobilenet

    log("user model: MobileNetV3Small 96x96, edgepipe run --model (bench/mobilenet.py)")
    try:
        return mobilenet.section(work)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise BenchError(str(exc)) from None


# --- section 6: int8 vs float32 ---------------------------------------------------------------

def int8_vs_float32(run_dir: Path) -> tuple[dict, list]:
    """Per model: host latency and .tflite size of int8 over float32, and the medians."""
    folder = RunFolder(run_dir)
    manifest = json.loads(folder.manifest.read_text())
    results = json.loads(folder.results.read_text())["results"]
    size = {(e["model"], e["mode"]): e["bytes"] for e in manifest["entries"] if e.get("bytes")}
    latency = {(r["model"], r["mode"]): r["metrics"]["latency_ms"] for r in results
               if r["target"] == "host" and (r.get("metrics") or {}).get("latency_ms")}
    figures = []
    families = sorted({m.get("family", "") for m in manifest["models"].values()})
    for what, values, unit in (("host latency", latency, "ms"), ("size", size, "bytes")):
        # Medians per family: a 5 KB MLP and an 80 KB CNN shrink very differently.
        for family in families:
            rows = [figure("int8 vs float32", f"{model} {what}", values[(model, "int8")],
                           values[(model, "float32")], "float32", unit, detail=True)
                    for model, block in manifest["models"].items()
                    if block.get("family", "") == family
                    and (model, "int8") in values and (model, "float32") in values]
            figures += rows + ([median_row("int8 vs float32",
                                           f"median {what}, {family or 'models'}", rows,
                                           detail=False)] if rows else [])
    return {"run": str(run_dir)}, figures


# --- what a run says on the console, read back -------------------------------------------------

# Rich wraps a console line at the terminal's width (80 in a pipe): the bench's own commands run
# wide, and the patterns take any whitespace between words anyway.
WIDE = {"COLUMNS": "1000"}


def _words(pattern: str, flags: int = 0) -> re.Pattern:
    """`pattern` with each space matching any run of whitespace (a wrapped line too)."""
    return re.compile(pattern.replace(" ", r"\s+"), flags)


_SUMMARY = _words(r"cluster on (dask://\S+): (\d+) model job\(s\), (\d+) parity chunk\(s\); "
                  r"sent ([\d.]+) MB \((\d+) distinct files, each once\), received ([\d.]+) MB "
                  r"of model job outputs")
_BUILT = _words(r"^([\w.-]+): trained\b.*?, ([\d.]+) s$", re.M | re.S)
_PARITY = _words(r"^parity on (\S+): (\d+) entries in (\d+) runner\(s\)", re.M)


def cluster_summary(text: str) -> dict | None:
    """The line a run on a cluster ends with (pipeline/cluster.py `summary`), as numbers:
    model jobs, parity chunks, bytes sent (each distinct file once) and received."""
    found = _SUMMARY.search(text)
    if found is None:
        return None
    url, jobs, chunks, sent, files, received = found.groups()
    return {"executor": url, "model_jobs": int(jobs), "chunks": int(chunks),
            "bytes_sent": round(float(sent) * 1e6), "files_sent": int(files),
            "bytes_received": round(float(received) * 1e6)}


def job_seconds(text: str) -> dict:
    """{model: seconds} from a run's `<model>: trained ..., <seconds> s` lines (the time of its
    job: training, conversion of every mode, bundle)."""
    return {name: float(seconds) for name, seconds in _BUILT.findall(text)}


def parity_chunks(text: str) -> dict:
    """{target: [entries, chunks]} from a run's `parity on T: N entries in K runner(s)` lines,
    summed (a run that repairs a variant runs parity again on the new entries)."""
    found: dict = {}
    for target, entries, chunks in _PARITY.findall(text):
        total = found.setdefault(target, [0, 0])
        total[0] += int(entries)
        total[1] += int(chunks)
    return found


def _converted(run_dir: Path) -> int:
    return sum(e["status"] == ConversionStatus.CONVERTED
               for e in json.loads(RunFolder(run_dir).manifest.read_text())["entries"])


# --- section 7: a pool of 3 loopback boards vs 1 -----------------------------------------------

def _load_sshd():
    """tests/sshd.py (a throwaway sshd; not installed): loaded by path, as the tests load it."""
    spec = importlib.util.spec_from_file_location("edgepipe_bench_sshd", REPO / "tests" / "sshd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(run_dir: Path, target: str) -> dict:
    """{id: record} of `target` in the run's merged results."""
    results = json.loads(RunFolder(run_dir).results.read_text())["results"]
    return {r["id"]: r for r in results if r["target"] == target}


def pool(edgepipe: str, run_dir: Path, work: Path) -> tuple[dict, list]:
    """`edgepipe parity` of the run folder on a pool of one loopback board, then on a pool of
    three (each on its own copy: parity on a run folder runs every entry again)."""
    sshd = _load_sshd()
    why = sshd.missing()
    if why:
        return {"skipped": why}, []
    servers = []
    try:
        try:
            for i in range(3):
                servers.append(sshd.Sshd(work / f"board{i}").start())
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            return {"skipped": f"a loopback sshd did not start: {exc}"}, []
        # One client key for every board, and one known_hosts that knows them all.
        key = (servers[0].folder / "client_key.pub").read_text()
        for server in servers[1:]:
            (server.folder / "authorized_keys").write_text(key)
        known = work / "known_hosts"
        known.write_text("".join((s.folder / "known_hosts").read_text() for s in servers))
        urls = [s.url() for s in servers]
        options = ["-F", "/dev/null", "-o", f"UserKnownHostsFile={known}",
                   "-o", "StrictHostKeyChecking=yes"]
        config = work / "pools.toml"
        config.write_text(f"[targets]\nssh_python = {json.dumps(sys.executable)}\n"
                          f"ssh_identity = {json.dumps(str(servers[0].identity))}\n"
                          f"ssh_options = {json.dumps(options)}\n"
                          f"[targets.pools]\none = {json.dumps(urls[:1])}\n"
                          f"three = {json.dumps(urls)}\n")
        # The connections' sockets in the bench's own folder (a short path: a socket's must
        # fit 104 bytes), not in the user's cache.
        env = {**WIDE, "EDGEPIPE_CACHE": str(work / "cache")}
        raw, statuses, boards, compute = {}, {}, {}, {}
        for name in ("one", "three"):
            folder, target = work / f"pool-{name}", f"pool:{name}"
            shutil.copytree(run_dir, folder, symlinks=True)
            log(f"pool of {len(urls) if name == 'three' else 1}: edgepipe parity RUN --target "
                f"{target}")
            raw[name] = measure([edgepipe, "parity", str(folder), "--target", target,
                                 "--config", str(config)], work / f"pool-{name}.log",
                                ok=(0, 1), env=env)
            records = _records(folder, target)
            statuses[name] = {i: r["status"] for i, r in records.items()}
            boards[name] = sorted({r["board"] for r in records.values() if r.get("board")})
            compute[name] = sum(r.get("seconds") or 0.0 for r in records.values())
    finally:
        for server in servers:
            server.stop()
    entries = _converted(run_dir)
    same = statuses["one"] == statuses["three"]
    one, three = raw["one"]["seconds"], raw["three"]["seconds"]
    # The chunks the pools cut the entries into: each one ssh call, runner start included.
    chunks = {name: min(entries, CHUNKS_PER_BOARD * count)
              for name, count in (("one", 1), ("three", len(urls)))}
    info = {"boards": urls, "raw": raw, "entries_run": entries, "statuses_identical": same,
            "boards_used": boards, "speedup": one / three, "chunks": chunks,
            "entries_seconds": compute,  # the runners' own time per entry, summed
            "seconds_per_entry_one_board": one / entries if entries else None}
    figures = [figure("pool", "parity on a pool of 3 boards", three, one, "a pool of 1 board",
                      "s", speedup=one / three, identical=same,
                      note=f"speedup {one / three:.2f}x over {entries} entries; statuses "
                           f"{'identical' if same else 'DIFFER'}; 3 loopback sshd on one "
                           f"{os.cpu_count()}-core machine: every board shares its CPU, so "
                           "CPU bound")]
    return info, figures


# --- section 8: a cold run on 2 local Dask workers vs the local one --------------------------

DASK_MISSING = ("Dask distributed is not installed (pip install 'edgepipe[cluster]'; make setup "
                "installs it)")


def _wait_for(log_path: Path, text: bytes, count: int, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if log_path.read_bytes().count(text) >= count:
            return
        time.sleep(0.2)
    raise BenchError(f"{what} did not start in {limit:.0f} s: "
                     f"{log_path.read_text(errors='replace')[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT: dask's own clean shutdown (a worker's nannies and their processes too)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _outputs_bytes(run_dir: Path) -> int:
    """The bytes of the outputs the parity runners saved (on a cluster: sent back)."""
    folder = RunFolder(run_dir)
    targets = {r["target"] for r in json.loads(folder.results.read_text())["results"]}
    return sum(p.stat().st_size for t in targets
               for p in outputs_dir(folder.target_results(t), t).rglob("*") if p.is_file())


def cluster(edgepipe: str, work: Path, config: Path | None, local: dict | None) -> tuple[dict,
                                                                                        list]:
    """A cold `edgepipe run --executor dask://...` on `dask scheduler` and `dask worker
    --nworkers 2 --nthreads 1 --resources tf=1` (started here, stopped at the end), against
    the cold local run at the default jobs: `local` (the runs section's, in
    `work/jobs-default`), else one made here. Both run `--targets host`. Then the report of
    the cluster's run with every plot drawn: the driver's serial part, beside the warm run."""
    dask = Path(sys.executable).with_name("dask")
    if importlib.util.find_spec("distributed") is None or not dask.exists():
        return {"skipped": DASK_MISSING}, []
    extra = ["--targets", "host"] + (["--config", str(config)] if config else [])
    baseline = work / "jobs-default"
    if local is None:
        log("cluster baseline: edgepipe run --targets host --force")
        local = measure([edgepipe, "run", "--out", str(baseline), "--force", *extra],
                        work / "cold-default-jobs.log", poll=0.2, ok=(0, 1))
    port = _load_sshd().free_port()
    url = f"dask://127.0.0.1:{port}"
    processes = []
    try:
        for name, cmd in (("scheduler", ["scheduler", "--host", "127.0.0.1", "--port",
                                         str(port), "--no-dashboard"]),
                          ("worker", ["worker", f"tcp://127.0.0.1:{port}", "--nworkers", "2",
                                      "--nthreads", "1", "--resources", "tf=1",
                                      "--no-dashboard"])):
            with open(work / f"dask-{name}.log", "wb") as out:
                processes.append(subprocess.Popen([str(dask), *cmd], stdout=out,
                                                  stderr=subprocess.STDOUT))
            if name == "scheduler":
                _wait_for(work / "dask-scheduler.log", b"Scheduler at:", 1, "dask scheduler")
        _wait_for(work / "dask-worker.log", b"Registered to", 2, "2 dask workers")
        remote_dir = work / "dask"
        log(f"cluster: edgepipe run --executor {url} --force")
        remote = measure([edgepipe, "run", "--out", str(remote_dir), "--executor", url,
                          "--force", *extra], work / "cluster.log", poll=0.2, ok=(0, 1),
                         env=WIDE)
        # Parity alone on the cluster (every entry again): the wall time of its chunks,
        # runner start and shipping included, which the entries' own seconds leave out.
        log(f"cluster: edgepipe parity RUN --executor {url}")
        parity_only = measure([edgepipe, "parity", str(remote_dir), "--target", "host",
                               "--executor", url],
                              work / "cluster-parity.log", ok=(0, 1), env=WIDE)
    finally:
        for process in reversed(processes):  # the workers first
            _stop(process)
    said = (work / "cluster.log").read_text(errors="replace")
    summary = cluster_summary(said)
    if summary is None:
        raise BenchError(f"the cluster run printed no `cluster on ...` line:\n{said[-2000:]}")
    shutil.rmtree(RunFolder(remote_dir).plots_dir, ignore_errors=True)
    log("driver: edgepipe report on the cluster's run, every plot drawn")
    report = measure([edgepipe, "report", str(remote_dir)], work / "report-cold.log")
    same = {"tflite": _tflite_hashes(baseline) == _tflite_hashes(remote_dir),
            "statuses": _statuses(baseline) == _statuses(remote_dir)}
    jobs = {"cluster": job_seconds(said),
            "local": job_seconds((work / "cold-default-jobs.log").read_text(errors="replace"))}
    parity = {}
    for target, (entries, count) in parity_chunks(said).items():
        # The results hold each entry's last run; `entries` counts every run (a repair's
        # parity pass may run some again).
        document = json.loads(RunFolder(remote_dir).target_results(target).read_text())
        per_entry = document["seconds"] / max(1, len(document["results"]))
        parity[target] = {"entries_run": entries, "chunks": count,
                          "results": len(document["results"]),
                          "entries_seconds": document["seconds"],
                          "seconds_per_entry": per_entry,
                          "seconds_per_chunk": per_entry * entries / count}
    model_jobs = summary["model_jobs"] or 1
    moved = {**summary, "bytes_received_per_model_job": summary["bytes_received"] / model_jobs,
             "bytes_sent_per_chunk": summary["bytes_sent"] / max(1, summary["chunks"]),
             "parity_outputs_bytes": _outputs_bytes(remote_dir)}
    again = (work / "cluster-parity.log").read_text(errors="replace")
    info = {"executor": url, "workers": "2 processes x 1 thread, tf=1 each", "cluster": remote,
            "local_default_jobs": local, "identical": same, "moved": moved, "job_seconds": jobs,
            "parity": parity, "models": len(jobs["cluster"]), "entries": _converted(remote_dir),
            "parity_only": {**parity_only, "chunks": parity_chunks(again),
                            "moved": cluster_summary(again)},
            "report_all_plots_drawn": report}
    ratio = remote["seconds"] / local["seconds"]
    received = moved["bytes_received_per_model_job"]
    figures = [figure("cluster", "cold run, dask 2 workers", remote["seconds"], local["seconds"],
                      "cold, default jobs", "s", identical=same,
                      note=f"{ratio:.2f}x the local time; .tflite "
                           f"{'identical' if same['tflite'] else 'DIFFER'}; statuses "
                           f"{'identical' if same['statuses'] else 'DIFFER'}; "
                           f"{received / 1e6:.2f} MB back per model job; 2 workers on this "
                           f"{os.cpu_count()}-core machine: CPU bound")]
    both = [m for m in jobs["cluster"] if m in jobs["local"]]
    if both:
        figures.append(figure(
            "cluster", "model job, dask (median)",
            statistics.median(jobs["cluster"][m] for m in both),
            statistics.median(jobs["local"][m] for m in both), "default jobs (median)", "s",
            note=f"train, convert, bundle: {len(both)} models, as each job timed itself"))
    return info, figures


# --- the machine, and main --------------------------------------------------------------------

def _proc_field(path: str, key: str) -> str | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), None)


def machine() -> dict:
    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    mem = _proc_field("/proc/meminfo", "MemTotal")  # "24576000 kB"
    return {"cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
            "cores": os.cpu_count(),
            "ram_gib": round(int(mem.split()[0]) / 1024 ** 2, 1) if mem else None,
            "os": platform.platform(), "python": platform.python_version(),
            "packages": {p: version(p) for p in PACKAGES}}


def git_commit() -> dict | None:
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):  # no git, or not a clone
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="2 models, float32 and int8, 3 epochs, 3 repeats (for tests)")
    parser.add_argument("--run", type=Path, help="bench this run folder (its report is "
                        "rewritten by `edgepipe report`) instead of making three runs")
    parser.add_argument("--repeats", type=int, help="repeats of each timing (7; --quick 3)")
    parser.add_argument("--rounds", type=int, help="rounds of the three cold zoo runs, "
                        "each figure taking each command's fastest (2; --quick 1)")
    parser.add_argument("--out", type=Path,
                        default=REPO / "bench" / "results.json")  # not a run folder
    parser.add_argument("--keep", action="store_true", help="keep the runs' temporary folder")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    rounds = args.rounds or (1 if args.quick else 2)
    edgepipe = shutil.which("edgepipe", path=str(Path(sys.executable).parent))
    if edgepipe is None:
        print(f"error: no edgepipe script beside {sys.executable}; run make setup",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="edgepipe-bench-"))
    sections, figures = {}, []
    try:
        config = work / "quick.toml" if args.quick else None
        if config:
            config.write_text(QUICK_CONFIG)
        if args.run:
            run_dir = args.run.resolve()
            sections["runs"] = {"skipped": f"--run {run_dir}: no runs made"}
        else:
            sections["runs"], figures, run_dir = runs(edgepipe, work, config, rounds)
        # Right after the runs, beside their cold --jobs 2 run (its folder and its figure).
        sections["cluster"], rows = cluster(edgepipe, work, config,
                                            sections["runs"].get("cold_default_jobs"))
        figures += rows
        tflite = next(run_dir / e["tflite"] for e in json.loads(
            RunFolder(run_dir).manifest.read_text())["entries"]
            if e["status"] == ConversionStatus.CONVERTED)
        for name, (info, rows) in (
                ("cli_start", cli_start(edgepipe, run_dir, tflite, repeats, work)),
                ("target_parity", target_parity(edgepipe, run_dir, work)),
                ("user_model", user_model(work, args.quick)),
                ("int8_vs_float32", int8_vs_float32(run_dir)),
                ("pool", pool(edgepipe, run_dir, work))):
            sections[name] = info
            figures += rows
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    document = {"schema_version": BENCH_SCHEMA_VERSION, "machine": machine(), "git": git_commit(),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "options": {"quick": args.quick, "run": str(args.run) if args.run else None,
                            "repeats": repeats, "rounds": rounds},
                "figures": figures, "sections": sections}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    log(f"wrote {args.out}")
    # Per-variant and per-model rows (detail) are in results.json; the table has the rest.
    print(table([f for f in figures if not f.get("detail")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
