"""Reading a night: EDF/BDF header checks and reader, channel recognition, preprocessing,
annotations, and the `Recording` they produce."""

from sleeplm.io.reader import EdfHeader, load_recording, preflight_table, read_annotation_file, read_edf_header
from sleeplm.io.recording import Recording

__all__ = ["EdfHeader", "Recording", "load_recording", "preflight_table", "read_annotation_file", "read_edf_header"]
