"""nwb_lrconn: low-rank RNN connectivity from NWB recordings, and what the data determine.

Importing the package is light: it loads no torch, pynwb or matplotlib. Submodules are imported
on use (``nwb_lrconn.io``, ``nwb_lrconn.model``, ``nwb_lrconn.inference``,
``nwb_lrconn.extension``, ``nwb_lrconn.plotting``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
