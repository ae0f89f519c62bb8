"""What a person reads or takes away: measured descriptions, figures, exports and the
`analyze` output folder."""

from sleeplm.report.analyze_dir import analyze_to_dir

__all__ = ["analyze_to_dir"]
