"""SleepLM Assistant core: recordings, the SleepLM network, measurements and night statistics.

Rooms, bottom up: `errors`, `terms` (shared vocabulary) and `paths` (the cache folder); `io` (reading a night into a
`Recording`); `model` (the SleepLM network) and `measure` (measurements), which do not import
each other; `synthetic` (the simulator); `report` (descriptions, figures, exports).
"""

import importlib
import importlib.abc
import importlib.util
import sys

from sleeplm.errors import *  # noqa: F401,F403
from sleeplm.io.recording import CANONICAL_CHANNELS, POSITION_CODES, STAGES, Recording  # noqa: F401

# Modules that moved into the rooms keep their old import path (e.g. `sleeplm.analysis`,
# `sleeplm.inference`): importing the old name returns the module at its new home.
_MOVED_MODULES = {
    "sleeplm.recording": "sleeplm.io.recording",
    "sleeplm.channels": "sleeplm.io.channels",
    "sleeplm.preprocess": "sleeplm.io.preprocess",
    "sleeplm.annotations": "sleeplm.io.annotations",
    "sleeplm.config": "sleeplm.model.config",
    "sleeplm.checkpoint": "sleeplm.model.checkpoint",
    "sleeplm.tokenizer": "sleeplm.model.tokenizer",
    "sleeplm.inference": "sleeplm.model.inference",
    "sleeplm.embedding_cache": "sleeplm.model.embedding_cache",
    "sleeplm.signals": "sleeplm.measure.signals",
    "sleeplm.quality": "sleeplm.measure.quality",
    "sleeplm.features": "sleeplm.measure.features",
    "sleeplm.respiratory": "sleeplm.measure.respiratory",
    "sleeplm.events": "sleeplm.measure.events",
    "sleeplm.staging": "sleeplm.measure.staging",
    "sleeplm.summary": "sleeplm.measure.summary",
    "sleeplm.analysis": "sleeplm.measure.analysis",
    "sleeplm.describe": "sleeplm.report.describe",
    "sleeplm.plots": "sleeplm.report.plots",
    "sleeplm.export": "sleeplm.report.export",
    "sleeplm.demo": "sleeplm.synthetic.demo",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec):
        module = importlib.import_module(self.new_name)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its new name; the import system replaced its spec with the alias's.
        module.__spec__ = self.own_spec


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new_name = _MOVED_MODULES.get(fullname)
        if new_name is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(new_name))


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())


def load_recording(path, channel_map=None, position_map=None, **kwargs):
    """Load an EDF/EDF+/BDF file or a ready ``[N, 10, 1920]`` tensor; see `sleeplm.io.load_recording`."""
    from sleeplm.io import load_recording as _load

    return _load(path, channel_map=channel_map, position_map=position_map, **kwargs)
