"""Run every benchmark in this package; exit 1 if any missed its target."""
import importlib
import pkgutil
import sys

import bench


def main() -> int:
    met = True
    for module_info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"bench.{module_info.name}")
        run = getattr(module, "run", None)
        if callable(run):
            print(f"== {module_info.name}")
            met = bool(run()) and met
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
