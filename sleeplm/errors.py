"""Error hierarchy. Every message says what is wrong and what the user can do about it."""

__all__ = [
    "SleepLMError",
    "RecordingError",
    "NotARecordingError",
    "CorruptRecordingError",
    "TooShortError",
    "ResourceLimitError",
    "DiscontinuousRecordingError",
    "ChannelMappingError",
    "TensorFormatError",
    "AnnotationFileError",
    "ScoringMismatchError",
    "CheckpointError",
    "ModelUnavailableError",
    "MeasurementError",
    "SleepLMRequestError",
    "TimeRangeError",
    "SimulationError",
    "PlotRangeError",
    "ExportError",
    "CohortInputError",
    "CohortRunError",
]


class SleepLMError(Exception):
    """Base class of every error this package raises on purpose."""


class RecordingError(SleepLMError):
    """The uploaded recording cannot be used as it is."""


class NotARecordingError(RecordingError):
    """The file is not an EDF/EDF+/BDF recording or a SleepLM tensor (wrong type, empty, random bytes)."""


class CorruptRecordingError(RecordingError):
    """The file claims to be EDF/BDF but its header and data disagree (truncated, bad record count...)."""


class TooShortError(RecordingError):
    """The recording holds less than one 30-s epoch."""


class ResourceLimitError(RecordingError):
    """The header claims more than the loader may allocate (duration, rate or memory budget)."""


class DiscontinuousRecordingError(RecordingError):
    """EDF+D with gaps: epochs would silently straddle missing data."""


class ChannelMappingError(RecordingError):
    """No recognisable sleep channel, or a user channel map that names channels the file lacks.

    Attributes
    ----------
    labels : the file's channel labels, when known (to fill in the channel map to type).
    wanted : the SleepLM channels a channel map should name to fix the error.
    """

    def __init__(self, message: str, *, labels=(), wanted=()):
        super().__init__(message)
        self.labels = tuple(labels)
        self.wanted = tuple(wanted)


class TensorFormatError(RecordingError):
    """A ready tensor of the wrong shape, dtype or content."""


class AnnotationFileError(RecordingError):
    """A separate scoring file (EDF+ hypnogram, NSRR/Profusion XML, UCDDB text, Noxturnal or plain
    CSV) that cannot be read: missing, of an unknown kind, malformed or hostile."""


class ScoringMismatchError(AnnotationFileError):
    """A scoring file that does not belong to the recording: stages or events past its end or
    before its start, another start time, or far fewer scored epochs than the recording holds."""


class CheckpointError(SleepLMError):
    """A checkpoint that does not fit the network (missing keys, wrong shapes, unreadable file)."""


class ModelUnavailableError(CheckpointError):
    """Weights cannot be obtained (hub unreachable and nothing cached); pass a local file instead."""


class MeasurementError(SleepLMError, ValueError):
    """A measurement asked with arguments that do not fit (unknown domain or rule, epochs outside the night)."""


class SleepLMRequestError(SleepLMError, ValueError):
    """A request SleepLM cannot answer as asked (unknown caption domain, empty query, bad option)."""


class TimeRangeError(SleepLMError, ValueError):
    """A time expression that cannot be read, or that falls outside the recording."""


class SimulationError(SleepLMError, ValueError):
    """A simulator argument out of range (unknown montage or severity, too short a night, bad rate)."""


class PlotRangeError(SleepLMError, ValueError):
    """An epoch range that cannot be drawn (outside the night, reversed, or too long)."""


class ExportError(SleepLMError, ValueError):
    """An export asked with inputs that do not fit (events without times, a hypnogram of another night)."""


class CohortInputError(SleepLMError):
    """A cohort input that is not a folder of recordings or a valid manifest, or a folder that is not a cohort."""


class CohortRunError(SleepLMError):
    """A cohort run that cannot start (bad options, Ray cluster unreachable)."""
