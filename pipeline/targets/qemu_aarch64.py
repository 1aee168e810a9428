"""The `qemu-aarch64` target: the parity runner on an emulated 64-bit Arm board (emulator.py
builds and runs it)."""

from . import emulator
from .base import Target, runner_args


class QemuAarch64(Target):
    name = "qemu-aarch64"
    description = "an emulated 64-bit Arm board: qemu-user, Debian arm64 Python 3.11"

    def availability(self):
        return emulator.ready()

    def stage_key(self, options):
        # The board's own software: a rebuilt sysroot or other wheels redo its results.
        return emulator.built_with()

    def _run(self, run_dir, out_json, options, only, debug):
        return emulator.run_runner(run_dir, out_json, target=self.name, timeout=options.timeout,
                                   debug=debug, extra_args=runner_args(options, only))


TARGET = QemuAarch64()
