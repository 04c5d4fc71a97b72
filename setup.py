"""Ship the built-in policies, the BPF headers and probes, and the workloads in the wheel.

The top level of the repository is fixed (policies/, bpf/ and workloads/ sit beside the
package), so a plain wheel would carry none of them and an installed schedagent would
have no policies. This build step copies them into ``schedagent/_data``, which
``schedagent.config.DATA_ROOT`` falls back to outside a checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("policies", "bpf", "workloads")


class BuildPyWithData(build_py):
    """build_py, then the data directories into the built package."""

    def run(self) -> None:
        super().run()
        here = Path(__file__).resolve().parent
        dest = Path(self.build_lib) / "schedagent" / "_data"
        for name in DATA_DIRS:
            target = dest / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(here / name, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.o", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
