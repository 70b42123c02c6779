"""Build hook: a wheel carries the shipped backbone and aligned model, so an installed package samples offline.

The repository keeps one copy of each model, under ``assets/``; building copies them into the wheel's
``elign/shipped/`` (where :func:`elign.io.assets.assets_dir` finds them when no ``assets/`` folder is beside the
package). Everything else about the package is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("backbone", "aligned")  # assets/<name>/model.safetensors -> elign/shipped/<name>/model.safetensors


class BuildWithShippedModels(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            source = root / "assets" / name / "model.safetensors"
            if not source.is_file():
                raise FileNotFoundError(f"{source} is missing: the wheel must carry the shipped models")
            target = Path(self.build_lib) / "elign" / "shipped" / name
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / "model.safetensors")


setup(cmdclass={"build_py": BuildWithShippedModels})
