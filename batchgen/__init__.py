"""batchgen: run prompt sheets as generation jobs on RunComfy's Model API, crash-safely.

The public API is small: `run_batch`, `check_batch`, `batch_status`, `cancel_batch` (in
`batchgen.runner`), `build_config` (in `batchgen.config`) and the error tree in
`batchgen.errors`. The `batchgen` command is a thin layer over them.
"""

from batchgen.errors import BatchgenError

__all__ = ["BatchgenError", "__version__"]
__version__ = "0.1.0"
