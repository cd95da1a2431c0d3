"""Fontconfig for the Graphviz that pygraphviz's Linux wheels bundle, without its warnings.

The wheel bundles its own fontconfig (2.13), older than a current system's (Debian 12
has 2.14). When it starts, besides the system's active configuration
(``/etc/fonts/fonts.conf`` and what that includes), it parses every *template* in its
compiled-in ``/usr/share/fontconfig/conf.avail``: files that are only examples, never
active, some in syntax it does not know (``<reset-dirs>``). Each of those prints a
``Fontconfig warning`` on stderr, once per process, on the first drawing.

:func:`load_system_config` does what fontconfig's own start does, less that scan of
the templates: it loads the active configuration and its fonts and makes it the
library's current one, before Graphviz asks fontconfig for anything. It only acts
when it cannot disturb anything: the bundled library is present, nothing has used it
yet (sagaflow imports pygraphviz first in this process), and the configuration file
exists (otherwise fontconfig's own fallback is left to run, and to say so).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import ModuleType

__all__ = ["load_system_config"]

_DEFAULT_CONFIG = Path("/etc/fonts/fonts.conf")  # the bundled library's compiled-in default


def load_system_config(pygraphviz: ModuleType) -> bool:
    """Make the system's font configuration current in the fontconfig bundled with
    ``pygraphviz``; whether it was done. Call it once, right after the first import."""
    libs = Path(str(pygraphviz.__file__)).resolve().parent.parent / "pygraphviz.libs"
    bundled = sorted(libs.glob("libfontconfig*.so*"))
    config_file = os.environ.get("FONTCONFIG_FILE") or str(_DEFAULT_CONFIG)
    if len(bundled) != 1 or not Path(config_file).is_file():
        return False
    # The library pygraphviz's Graphviz already loaded: dlopen hands back the same one.
    fc = ctypes.CDLL(str(bundled[0]))
    fc.FcConfigCreate.restype = ctypes.c_void_p
    fc.FcConfigParseAndLoad.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    fc.FcConfigGetCacheDirs.argtypes = [ctypes.c_void_p]
    fc.FcConfigGetCacheDirs.restype = ctypes.c_void_p
    fc.FcStrListNext.argtypes = [ctypes.c_void_p]
    fc.FcStrListNext.restype = ctypes.c_char_p
    fc.FcStrListDone.argtypes = [ctypes.c_void_p]
    fc.FcConfigBuildFonts.argtypes = [ctypes.c_void_p]
    fc.FcConfigSetCurrent.argtypes = [ctypes.c_void_p]
    fc.FcConfigDestroy.argtypes = [ctypes.c_void_p]
    config = fc.FcConfigCreate()
    if not config:
        return False
    loaded = bool(fc.FcConfigParseAndLoad(config, None, 1))
    # Without a cache directory fontconfig's own start adds defaults, so that fonts are
    # not scanned afresh by every process: leave such a configuration to it.
    dirs = fc.FcConfigGetCacheDirs(config) if loaded else None
    cached = bool(dirs) and fc.FcStrListNext(dirs) is not None
    if dirs:
        fc.FcStrListDone(dirs)
    if cached and fc.FcConfigBuildFonts(config) and fc.FcConfigSetCurrent(config):
        return True  # current now: the library keeps it for the life of the process
    fc.FcConfigDestroy(config)
    return False
