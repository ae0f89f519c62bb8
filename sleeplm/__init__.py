"""SleepLM Assistant core: recordings, the SleepLM network, measurements and night statistics."""

from sleeplm.errors import *  # noqa: F401,F403
from sleeplm.recording import CANONICAL_CHANNELS, POSITION_CODES, STAGES, Recording  # noqa: F401


def load_recording(path, channel_map=None, position_map=None, **kwargs):
    """Load an EDF/EDF+/BDF file or a ready ``[N, 10, 1920]`` tensor; see `sleeplm.io.load_recording`."""
    from sleeplm.io import load_recording as _load

    return _load(path, channel_map=channel_map, position_map=position_map, **kwargs)
