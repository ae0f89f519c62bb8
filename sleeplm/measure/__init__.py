"""Measurements over a `Recording`: signal quality, per-epoch features, respiratory and other
events, staging, and the night's AASM statistics."""

from sleeplm.measure.analysis import NightAnalysis, analyze_night

__all__ = ["NightAnalysis", "analyze_night"]
