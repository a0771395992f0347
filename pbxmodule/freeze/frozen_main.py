"""The module's own Python on the PBX (frozen by PyInstaller into `bin/extcdr`, its runtime in
`bin/_internal/`): `bin/extcdr ARGS` is `python -m cli ARGS`, and `bin/extcdr -m NAME ARGS` is
`python -m NAME ARGS`, over the module's folder (the parent of `bin/`). The module's code stays
the archive's own `.py` files; the bundle holds only the interpreter, the standard library and
the module's dependencies."""
import os
import runpy
import sys

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
sys.path.insert(0, MODULE_DIR)
if len(sys.argv) > 2 and sys.argv[1] == "-m":
    name, sys.argv = sys.argv[2], [sys.executable, *sys.argv[3:]]
    runpy.run_module(name, run_name="__main__", alter_sys=True)
else:
    runpy.run_module("cli", run_name="__main__", alter_sys=True)
