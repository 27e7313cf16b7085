__version__ = "0.1.0"

import os as _os

if _os.environ.get("FASTGW_PURE_PYTHON"):
    # Before any submodule is imported: use the .py sources even where compiled
    # extensions are installed (fastgw/build.py).
    from fastgw.build import install_pure_python_finder

    install_pure_python_finder()
