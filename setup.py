"""Maps the top-level folders onto one import namespace (docs/ARCHITECTURE.md, "The dependency rule").

`diffattn/` is the core; `processors/`, `kernels/`, `pipelines/` and `app/` install as
`diffattn.processors`, `diffattn.kernels`, ... . Sub-packages are found automatically so the
mapping works for `pip install .` and `pip install -e .` alike.
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "diffattn": "diffattn",
    "diffattn.processors": "processors",
    "diffattn.kernels": "kernels",
    "diffattn.pipelines": "pipelines",
    "diffattn.app": "app",
}


def _packages() -> list[str]:
    found = []
    for package, folder in PACKAGE_DIRS.items():
        found.append(package)
        found += [f"{package}.{sub}" for sub in find_packages(where=folder)]
    return found


setup(packages=_packages(), package_dir=PACKAGE_DIRS)
