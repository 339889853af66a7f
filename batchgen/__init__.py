"""batchgen: run prompt sheets as generation jobs on RunComfy's Model API, crash-safely.

The public API is small: `run_batch`, `check_batch`, `batch_status`, `cancel_batch` (in
`batchgen.runner`), `build_config` (in `batchgen.config`) and the error tree in
`batchgen.errors`. The `batchgen` command is a thin layer over them.
"""

import sys

# httpx's package imports its command-line client too when click, rich and pygments are
# installed, as they are with batchgen: 50-100 ms of every start, for code batchgen never
# runs. A None entry makes that import fail the way httpx expects when they are missing.
sys.modules.setdefault("httpx._main", None)

from batchgen.errors import BatchgenError  # noqa: E402

__all__ = ["BatchgenError", "__version__"]
__version__ = "0.1.0"
