"""`pool:NAME`: the boards of one kind that the run config's [targets.pools] lists, as one target.

    [targets.pools]
    pi4 = ["ssh://pi@board-a", "ssh://pi@board-b:2222"]

The entries to run are cut into chunks, about CHUNKS_PER_BOARD per board so that a faster board
takes more of them, and one thread per board pulls chunks from one queue and runs each with
ssh.run_runner: the runner of an ssh:// board, its calls to one board sharing one connection
(ssh.py). The records name the pool as their target and carry the `board` that ran them; the
outputs go to outputs/<the pool's folder>/, as any target's.

A board that fails a chunk (unreachable, time limit, crash: run_runner raised) gets no more
work, and its chunk goes back on the queue once, for another board. A chunk's records come only
from the one call that brought them back, so no entry is run twice to success; an entry no board
could run is an `error` naming every board tried and what each said, so none is lost.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import EdgepipeError, unknown_name
from ...core.files import scratch_file, sha256_file, write_json
from ...device_tests.schema import (
    SAFE_ID,
    ResultStatus,
    RunFolder,
    base_record,
    not_run,
    results_document,
    target_folder,
)
from . import ssh
from .base import Target, runner_args

PREFIX = "pool:"
FORM = "pool:NAME"
CHUNKS_PER_BOARD = 3
# How often a chunk is tried: on its first board, then once on another.
TRIES = 2
EXAMPLE = '["ssh://pi@board-a", "ssh://pi@board-b:2222"]'


def check_pools(pools: dict, where: str) -> None:
    """[targets.pools] (a table of string lists, TARGET_RULES checked that): each name of safe
    characters, each pool at least one board, every board an ssh:// URL, listed once."""
    for name, boards in pools.items():
        if not SAFE_ID.fullmatch(name):
            raise EdgepipeError(f"Pool name {name!r} in {where} may hold only letters, digits, "
                                f"'.', '_' and '-' (a letter, digit or '_' first); rename "
                                f"it, e.g. pi4.")
        if not boards:
            raise EdgepipeError(f"Expected pool {name} in {where} to list at least one board, "
                                f"e.g. {name} = {EXAMPLE}. Received: [].")
        seen: dict = {}
        for url in boards:
            try:
                board = ssh.parse_url(url)
            except EdgepipeError as exc:
                raise EdgepipeError(f"{where} {name}: {exc}") from None
            same = (board.user, board.host.lower(), board.port or 22)
            if same in seen:
                raise EdgepipeError(f"Pool {name} in {where} lists the board {board.address} "
                                    f"twice ({seen[same]} and {url}); list each board once.")
            seen[same] = url


@dataclass
class _Chunk:
    ids: list
    tried: list = field(default_factory=list)  # the boards that failed it, in order


# (board URL, the chunk's entry ids, None or what the board said): after each chunk
Observer = Callable[[str, list, "str | None"], None]


def run_pool(name: str, boards, run_dir: Path, out_json: Path, options, only=None,
             debug: bool = False, *, observe: Observer | None = None,
             per_board: int = CHUNKS_PER_BOARD) -> subprocess.CompletedProcess:
    """Run the entries `only` (default: all) of the bundle in `run_dir` on the pool `name`'s
    `boards`; writes `out_json` (one results document, in manifest order) and the outputs
    beside it. Returns exit 0 when every record is ok, else 1; `observe` hears of every chunk."""
    run_dir, out_json = Path(run_dir), Path(out_json)
    folder = RunFolder(run_dir)
    try:
        entries = {e["id"]: e for e in json.loads(folder.manifest.read_text())["entries"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgepipeError(f"{folder.manifest}: not a bundle manifest ({exc}); rerun "
                            "`edgepipe run`") from None
    wanted = None if only is None else set(only)
    ids = [i for i in entries if wanted is None or i in wanted]
    unknown = sorted((wanted or set()) - set(ids))
    if unknown:
        raise EdgepipeError(f"No entry {', '.join(unknown)} in {folder.manifest}")
    boards = list(dict.fromkeys(boards))  # a board listed twice is still one board
    count = min(len(ids), per_board * len(boards))
    work: queue.Queue = queue.Queue()
    for k in range(count):  # interleaved: neighbours in the manifest (a model's modes) cost alike
        work.put(_Chunk(ids[k::count]))

    lock = threading.Lock()
    live = set(boards)
    said: dict = {}  # board -> what it said when it failed (it then got no more work)
    records: dict = {}  # entry id -> its record
    documents: list = []  # the boards' results documents, for the runtime and platform
    crashed: list = []  # exceptions that are not a board's failure: a defect, raised at the end

    def give_up(chunk: _Chunk, tried) -> None:
        reason = f"No board of {name} could run it: " + " ".join(
            f"[{board}] {said[board].rstrip('.')}." for board in tried)
        for i in chunk.ids:
            record = not_run(entries[i], name)  # no file to run: every board says so alone
            if record is None:
                record = base_record(entries[i], name)
                record["reason"] = reason
            records[i] = record

    def drop(board: str, chunk: _Chunk, message: str) -> None:
        """`board` failed `chunk` (under the lock)."""
        live.discard(board)
        said[board] = message
        chunk.tried.append(board)
        if live and len(chunk.tried) < TRIES:
            work.put(chunk)  # for another board: this one takes no more
        elif live:
            give_up(chunk, chunk.tried)
        else:  # the last board: what is left, nobody will run
            give_up(chunk, [b for b in boards if b in said])
            while True:
                try:
                    rest = work.get_nowait()
                except queue.Empty:
                    break
                give_up(rest, [b for b in boards if b in said])
                work.task_done()

    def take(board: str, chunk: _Chunk, document: dict) -> None:
        """The records `board` brought back for `chunk` (under the lock)."""
        documents.append(document)
        got = {r.get("id"): r for r in document.get("results") or () if isinstance(r, dict)}
        for i in chunk.ids:
            record = got.get(i)
            if record is None:  # a runner answers for every entry it was given
                record = base_record(entries[i], name)
                record["reason"] = f"{board} returned no result for it; run again"
            record.update(target=name, board=board)
            records[i] = record

    def serve(board: str) -> None:
        while True:
            chunk = work.get()
            if chunk is None:
                return
            error = None
            try:
                document = _run_chunk(name, board, run_dir, out_json, options, chunk.ids, debug)
            except EdgepipeError as exc:
                error = str(exc)
            except BaseException as exc:  # noqa: BLE001 (a defect: re-raised below)
                crashed.append(exc)
                error = f"{type(exc).__name__}: {exc}"
            with lock:
                if error is None:
                    take(board, chunk, document)
                else:
                    drop(board, chunk, error)
            try:
                if observe is not None:
                    observe(board, list(chunk.ids), error)
            except BaseException as exc:  # noqa: BLE001 (the queue must still be told)
                crashed.append(exc)
            work.task_done()
            if error is not None:
                return

    threads = [threading.Thread(target=serve, args=(board,), name=f"pool {board}", daemon=True)
               for board in boards]
    try:
        for thread in threads:
            thread.start()
        work.join()
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
        # Close the connections now rather than leave a master per board for PERSIST seconds
        # after a run that has used them all.
        for board in boards:
            ssh.close_connection(board, ssh.identity_of(options), tuple(options.ssh_options))
    if crashed:
        raise crashed[0]
    results = [records[i] for i in ids]
    first = documents[0] if documents else {}
    write_json(out_json, results_document(
        name, sha256_file(folder.manifest), results, first.get("runtime"),
        first.get("platform"), sum(r.get("seconds") or 0.0 for r in results)))
    ok = all(r["status"] in ResultStatus.values() and ResultStatus(r["status"]).ok
             for r in results)
    return subprocess.CompletedProcess([name], 0 if ok else 1, "", "".join(
        f"error: {board}: {message}\n" for board, message in said.items()))


def _run_chunk(name: str, board: str, run_dir: Path, out_json: Path, options, ids: list,
               debug: bool) -> dict:
    """One chunk on one board: its results document (outputs written beside `out_json`)."""
    # Named as edgepipe's own, beside the pool's results: a killed run's chunk is removed later.
    scratch = f"{target_folder(name)}.{target_folder(board)}.partial"
    with scratch_file(out_json.parent, scratch) as (partial, _):
        ssh.run_runner(board, run_dir, partial, name=name, python=options.ssh_python,
                       identity=ssh.identity_of(options), ssh_options=tuple(options.ssh_options),
                       timeout=options.timeout, extra_args=runner_args(options, ids),
                       debug=debug, only=ids)
        try:
            return json.loads(partial.read_text())
        except ValueError:
            raise EdgepipeError(f"The results file from {board} is not JSON; check the "
                                f"runner copied there and run again") from None


class Pool(Target):
    """The boards of one [targets.pools] entry; the registry's instance stands for every pool
    (its name is the form), `named` gives the one called `pool:NAME`."""

    # (no square brackets: `edgepipe targets` prints it as rich markup)
    description = ("the boards the run config's targets.pools lists as NAME, one target: each "
                   "takes chunks of entries over SSH")

    def __init__(self, name: str = FORM):
        self.name = name

    @property
    def pool(self) -> str:
        return self.name[len(PREFIX):]

    def claims(self, name):
        return name.startswith(PREFIX)

    def named(self, name):
        if not SAFE_ID.fullmatch(name[len(PREFIX):]):
            raise EdgepipeError(f"Expected a target {FORM}, NAME a pool of the run config's "
                                f"[targets.pools]. Received: {name!r}; write it as pool:pi4.")
        return Pool(name)

    def check_options(self, options):
        if self.pool in options.pools:
            return
        define = (f"list its boards in the run config (--config): [targets.pools] "
                  f"{self.pool} = {EXAMPLE}")
        if not options.pools:
            raise EdgepipeError(f"Unknown pool {self.pool!r} ({self.name}): the run config "
                                f"defines no pools; {define}.")
        raise EdgepipeError(f"{unknown_name('pool', self.pool, options.pools)} Or {define}.")

    def availability(self):
        return ssh.TARGET.availability()

    def sessions(self, workers):
        return 1  # all its entries in one call: the pool spreads them over its boards

    def spread(self, options, chunks):
        boards = options.pools.get(self.pool, ())
        return f"over {len(boards)} board(s)"

    def stage_key(self, options):
        # What decides a result: the boards' Python. Not the board list: boards of a pool are
        # of one kind, and adding one must not run everything again.
        return options.ssh_python

    def _run(self, run_dir, out_json, options, only, debug):
        self.check_options(options)
        return run_pool(self.name, options.pools[self.pool], run_dir, out_json, options, only,
                        debug)


TARGET = Pool()
